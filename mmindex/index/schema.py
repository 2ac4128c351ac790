"""Arrow schemas of every table and the index format version.

Every table shares the file columns (id, path, size, mtime_ns, sha256), so one change
detection serves images, text corpora and the errors of both. Embeddings are
fixed_size_list<float32>[D], which DuckDB, Polars and PyArrow read directly."""

from __future__ import annotations

import pyarrow as pa

FORMAT_VERSION = 1
VECTOR_TABLES = ("images", "texts")
TABLES = VECTOR_TABLES + ("errors",)

_FILE_FIELDS = [
    pa.field("id", pa.int64(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("size", pa.int64()),
    pa.field("mtime_ns", pa.int64()),
    pa.field("sha256", pa.string()),  # of the file's bytes
]


FILE_SCHEMA = pa.schema(_FILE_FIELDS)


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def images_schema(dim: int) -> pa.Schema:
    return pa.schema(_FILE_FIELDS + [
        pa.field("width", pa.int32()),  # after EXIF rotation
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("embedding", embedding_type(dim)),
    ])


def texts_schema(dim: int) -> pa.Schema:
    return pa.schema(_FILE_FIELDS + [
        pa.field("key", pa.string()),  # "" for a whole-file document, "row N" for a table row
        pa.field("text", pa.string()),
        pa.field("text_sha256", pa.string()),  # identical texts are encoded once
        pa.field("embedding", embedding_type(dim)),
    ])


ERRORS_SCHEMA = pa.schema(_FILE_FIELDS + [
    pa.field("table", pa.string()),  # which table the file was meant for
    pa.field("reason", pa.string()),
])


def table_schema(table: str, dim: int) -> pa.Schema:
    return {"images": images_schema, "texts": texts_schema}[table](dim) if table != "errors" \
        else ERRORS_SCHEMA

"""Arrow schemas of every table and the index format version.

Every table shares the file columns (id, path, size, mtime_ns, sha256), so one change
detection serves images, text corpora and the errors of both. Embeddings are
fixed_size_list<float32>[D], which DuckDB, Polars and PyArrow read directly."""

from __future__ import annotations

import pyarrow as pa

FORMAT_VERSION = 1
VECTOR_TABLES = ("images", "texts", "tiles")
SEARCH_TABLES = ("images", "texts")  # what a search targets; tiles are found through images
TABLES = VECTOR_TABLES + ("errors",)
# Tables an index written before them lacks: its manifest reads them as empty (data/tiles.py).
OPTIONAL_TABLES = ("tiles",)

_FILE_FIELDS = [
    pa.field("id", pa.int64(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("size", pa.int64()),
    pa.field("mtime_ns", pa.int64()),
    pa.field("sha256", pa.string()),  # of the file's bytes
]


FILE_SCHEMA = pa.schema(_FILE_FIELDS)


# When and where, from EXIF (data/exif.py); null when the photo does not say. Added after
# format 1's first indexes were written: their shards lack these columns (see conform).
PHOTO_FIELDS = [
    pa.field("taken", pa.timestamp("us")),  # the camera's clock, no time zone
    pa.field("camera", pa.string()),
    pa.field("lens", pa.string()),
    pa.field("latitude", pa.float64()),
    pa.field("longitude", pa.float64()),
]


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def images_schema(dim: int) -> pa.Schema:
    return pa.schema(_FILE_FIELDS + [
        pa.field("width", pa.int32()),  # after EXIF rotation
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        *PHOTO_FIELDS,
        # A PDF's page (1-based): each page is a row whose path is the PDF's; null for
        # photos. Added like PHOTO_FIELDS: older shards read it as null.
        pa.field("page", pa.int32()),
        pa.field("embedding", embedding_type(dim)),
    ])


def texts_schema(dim: int) -> pa.Schema:
    return pa.schema(_FILE_FIELDS + [
        # "" for a whole-file document, "row N" for a table row, "p. N" for a PDF page's text
        pa.field("key", pa.string()),
        pa.field("text", pa.string()),
        pa.field("text_sha256", pa.string()),  # identical texts are encoded once
        pa.field("embedding", embedding_type(dim)),
    ])


def tiles_schema(dim: int) -> pa.Schema:
    """One row per tile of an image (data/tiles.py); the file columns are the image's, so a
    tile whose image changed (another sha256) or went (no image_id) is known to be stale."""
    return pa.schema(_FILE_FIELDS + [
        pa.field("image_id", pa.int64(), nullable=False),
        # the box in the image's full-resolution pixels; for a PDF page (image_id names the
        # page's row) in the pixels of the page as ingest rendered it: the row's width x height
        pa.field("x0", pa.int32()),
        pa.field("y0", pa.int32()),
        pa.field("x1", pa.int32()),  # exclusive
        pa.field("y1", pa.int32()),
        pa.field("embedding", embedding_type(dim)),
    ])


ERRORS_SCHEMA = pa.schema(_FILE_FIELDS + [
    pa.field("table", pa.string()),  # which table the file was meant for
    pa.field("reason", pa.string()),
])


def table_schema(table: str, dim: int) -> pa.Schema:
    schemas = {"images": images_schema, "texts": texts_schema, "tiles": tiles_schema}
    return schemas[table](dim) if table != "errors" else ERRORS_SCHEMA


def conform(table: pa.Table, schema: pa.Schema, columns=None) -> pa.Table:
    """A shard's rows in the table's current schema: a nullable column added since the shard
    was written reads as nulls, so an older index keeps working without re-encoding."""
    names = list(columns) if columns is not None else schema.names
    present = set(table.column_names)
    if all(name in present for name in names):
        return table.select(names)
    fields = [table.schema.field(n) if n in present else schema.field(n) for n in names]
    arrays = [table.column(f.name) if f.name in present else pa.nulls(table.num_rows, f.type)
              for f in fields]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

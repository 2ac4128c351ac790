"""The index directory: Parquet shards, FAISS files and one manifest, committed atomically.

A writer adds files under new names, fsyncs them, then replaces manifest.json (temporary
file, fsync, rename, fsync of the directory). A reader opens the manifest once and sees one
generation. Shards are copy-on-write: a commit that removes rows rewrites only the shards
holding them. Files no manifest names are garbage that the next writer deletes."""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmindex.core import faults
from mmindex.data.scan import file_sha256
from mmindex.errors import (
    IndexFormatError,
    IndexLockedError,
    IndexNotWritableError,
    IndexWriteError,
    MissingFileError,
    MmindexError,
)
from mmindex.index.schema import (
    FORMAT_VERSION,
    OPTIONAL_TABLES,
    TABLES,
    VECTOR_TABLES,
    conform,
    table_schema,
)
from mmindex.models.encoder import EncoderInfo

MANIFEST = "manifest.json"
LOCK = "lock"
MAX_SHARD_ROWS = 50_000  # bounds what a copy-on-write delete rewrites
MODEL_METADATA = b"mmindex.model"  # each shard names its model, so doctor can rebuild a manifest
# Stepwise manifest migrations: MIGRATIONS[v] turns a format-v manifest dict into format v+1.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


@dataclass(frozen=True)
class TableState:
    shards: tuple[str, ...] = ()  # paths relative to the index root
    rows: int = 0
    faiss: str | None = None  # vector tables only
    index: dict | None = None  # the FAISS index's kind and parameters, e.g. {"kind": "ivf", ...}
    # shard -> SHA-256 of its bytes, recorded at commit. Optional: manifests written before
    # it (same format 1; older readers ignore the key) have None, and their shards are
    # checked by page CRCs (if written with them) and the values' sanity only.
    checksums: dict[str, str] | None = None


@dataclass(frozen=True)
class Manifest:
    format_version: int
    generation: int
    model: EncoderInfo
    next_id: int
    tables: dict[str, TableState]
    updated: float = field(default_factory=time.time)
    tiling: dict | None = None  # data/tiles.TileSpec.to_dict() when images are also tiled

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2)

    def files(self) -> set[str]:
        """Every shard and FAISS file this generation names, relative to the index root."""
        named = {s for t in self.tables.values() for s in t.shards}
        return named | {t.faiss for t in self.tables.values() if t.faiss}

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        try:
            data = json.loads(text)
            version = data["format_version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexFormatError(f"{where} is damaged ({exc}); run `mmindex doctor`") from None
        data = _migrate(data, version, where)
        try:
            tables = {name: TableState(tuple(t["shards"]), t["rows"], t.get("faiss"), t.get("index"),
                                       t.get("checksums"))
                      for name, t in data["tables"].items()}
            tables |= {name: TableState() for name in OPTIONAL_TABLES if name not in tables}
            if set(tables) != set(TABLES):
                raise KeyError(f"tables {sorted(tables)}, expected {sorted(TABLES)}")
            return cls(FORMAT_VERSION, data["generation"], EncoderInfo(**data["model"]),
                       data["next_id"], tables, data.get("updated", 0.0), data.get("tiling"))
        except (KeyError, TypeError) as exc:
            raise IndexFormatError(f"{where} is damaged ({exc}); run `mmindex doctor`") from None


def _migrate(data: dict, version, where: Path) -> dict:
    """Bring an older manifest up to FORMAT_VERSION step by step; refuse what can't be read."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise IndexFormatError(f"{where} has no valid format version ({version!r}); "
                               "run `mmindex doctor`")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{where} was written by a newer mmindex (format {version}, this one reads up "
            f"to {FORMAT_VERSION}); upgrade mmindex to use this index"
        )
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise IndexFormatError(
                f"{where} has format {version}, which this mmindex (format {FORMAT_VERSION}) "
                "cannot migrate; re-ingest into a new --index")
        data, version = MIGRATIONS[version](data), version + 1
    return data


@dataclass(frozen=True)
class WrittenShard:
    """A shard a worker wrote into the index directory, for a commit to adopt: what the
    worker reports, and what the commit checks against the file before naming it."""

    relative: str  # e.g. "images/g000003-w1a2b3c4d-5e6f7a8b9c0d.parquet"
    rows: int
    sha256: str


@dataclass
class TableChange:
    """What one commit does to one table: rows to write, rows to remove, and shards already
    written by workers to adopt as they are."""

    add: pa.Table | None = None
    remove_ids: set[int] = field(default_factory=set)
    adopt: tuple[WrittenShard, ...] = ()


def read_manifest(root: Path) -> Manifest:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"no index at {root} (no {MANIFEST}); run `mmindex ingest` first")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IndexFormatError(f"{path} is damaged ({exc}); run `mmindex doctor`") from None
    return Manifest.from_json(text, path)


def read_table(root: Path, manifest: Manifest, table: str, columns=None) -> pa.Table:
    """All live rows of a table at the manifest's generation."""
    schema = table_schema(table, manifest.model.dim)
    shards = [conform(read_shard(Path(root), s, columns), schema, columns)
              for s in manifest.tables[table].shards]
    return _concat(shards, schema, columns)


def read_matching(root: Path, manifest: Manifest, table: str, key: str, values,
                  columns=None) -> pa.Table:
    """The live rows of a table whose `key` column is in `values`, in table order. Every
    shard's key column is read, the other columns only of the shards that hold a match: a
    few files' rows of a large table cost a shard's embeddings, not the whole table's."""
    schema = table_schema(table, manifest.model.dim)
    wanted = pa.array(sorted(values), schema.field(key).type)
    parts = []
    for shard in manifest.tables[table].shards:
        keys = conform(read_shard(Path(root), shard, [key]), schema, [key]).column(key)
        hits = pc.indices_nonzero(pc.is_in(keys, value_set=wanted))
        if len(hits):
            parts.append(conform(read_shard(Path(root), shard, columns), schema,
                                 columns).take(hits))
    return _concat(parts, schema, columns)


def read_matching_vectors(root: Path, manifest: Manifest, table: str, key: str, values,
                          columns=None) -> tuple[pa.Table, np.ndarray]:
    """read_matching's rows without their embeddings, and those as (N, D) float32: what a
    pass reuses of stored rows instead of encoding again. A null embedding is damage."""
    stored = read_matching(root, manifest, table, key, values, columns)
    try:
        vectors = embedding_matrix(stored.column("embedding"))
    except IndexFormatError as exc:
        raise IndexFormatError(f"the {table} table of {root}: {exc}; run `mmindex doctor`"
                               ) from None
    return stored.drop_columns(["embedding"]), vectors


def _concat(shards: list[pa.Table], schema: pa.Schema, columns) -> pa.Table:
    if not shards:  # (not schema.empty_table(): it imports pandas, 0.8 s of a cold search)
        empty = pa.Table.from_batches([], schema=schema)
        return empty.select(columns) if columns else empty
    return pa.concat_tables(shards)


def read_shard(root: Path, relative: str, columns=None) -> pa.Table:
    """One Parquet shard; a missing or unreadable one is a typed error naming the file.
    Every page read is checked against its CRC (shards are written with them), so even a
    reader of a few columns notices damage in what it reads. ParquetFile, not read_table:
    read_table goes through pyarrow.dataset, which imports pandas (0.8 s of a cold search)."""
    try:
        with pq.ParquetFile(root / relative, page_checksum_verification=True) as shard:
            return shard.read(columns=columns)
    except FileNotFoundError:
        raise MissingFileError(f"shard {root / relative} is missing; run `mmindex doctor`") from None
    except (pa.ArrowException, OSError) as exc:
        raise IndexFormatError(f"shard {root / relative} is damaged ({exc}); "
                               "run `mmindex doctor`") from None



def write_shard(root: str | Path, relative: str, table: pa.Table, model: EncoderInfo) -> str:
    """Write one shard through pyarrow.fs (the driver's commits and the Ray workers alike):
    page CRCs on, the model in its metadata (doctor rebuilds a manifest from it), fsynced.
    `root` is the index directory or its URI (storage.root_uri). Returns its SHA-256."""
    from mmindex.index import storage

    fs, base = storage.filesystem(root if isinstance(root, str) else storage.root_uri(root))
    target = f"{base}/{relative}"
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    meta = {MODEL_METADATA: json.dumps(asdict(model)).encode()}
    with fs.open_output_stream(target) as sink:
        pq.write_table(table.replace_schema_metadata(meta), sink, write_page_checksum=True)
    _fsync(Path(target))  # a POSIX root (storage.index_root refuses any other)
    faults.point("store.shard.written")
    return file_sha256(Path(target))


def embedding_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(N, D) float32 of an embedding column (fixed_size_list<float32>[D]) from its flat
    values, without a Python object per row: a view for one chunk, one copy for several.
    A null embedding, or a null in one, is damage: IndexFormatError."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    dim = column.type.list_size
    matrices = []
    for chunk in chunks:
        flat = chunk.flatten()  # (n * D,); skips null rows, hence the check
        if chunk.null_count or flat.null_count:
            raise IndexFormatError(f"its embeddings hold nulls ({chunk.null_count} null rows, "
                                   f"{flat.null_count} null values)")
        matrices.append(flat.to_numpy().astype(np.float32, copy=False).reshape(len(chunk), dim))
    if len(matrices) == 1:
        return matrices[0]
    return np.concatenate(matrices or [np.empty((0, dim), np.float32)])


def shard_vectors(root: Path, relative: str, chunk_rows: int = 8192):
    """(ids (n,), vectors (n, D) float32) of a shard, `chunk_rows` at a time: only these two
    columns are read, so a large shard never sits in memory whole."""
    try:
        with pq.ParquetFile(Path(root) / relative, page_checksum_verification=True) as shard:
            for batch in shard.iter_batches(chunk_rows, columns=["id", "embedding"]):
                yield batch.column("id").to_numpy(), embedding_matrix(batch.column("embedding"))
    except FileNotFoundError:
        raise MissingFileError(f"shard {Path(root) / relative} is missing; "
                               "run `mmindex doctor`") from None
    except (pa.ArrowException, OSError, IndexFormatError) as exc:
        raise IndexFormatError(f"shard {Path(root) / relative} is damaged ({exc}); "
                               "run `mmindex doctor`") from None


def stored_vectors(root: Path, manifest: Manifest, table: str,
                   chunk_rows: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Every stored (id, embedding) of a vector table at the manifest's generation, in table
    order (read_table's), as (ids (N,) int64, vectors (N, D) float32). Read shard by shard
    in chunks into one preallocated array: a single copy of the vectors, not a table plus
    a per-row object array plus a stacked copy."""
    state = manifest.tables[table]
    ids = np.empty(state.rows, np.int64)
    vectors = np.empty((state.rows, manifest.model.dim), np.float32)
    filled = 0
    for shard in state.shards:
        for chunk_ids, chunk in shard_vectors(root, shard, chunk_rows):
            if filled + len(chunk_ids) > state.rows:
                raise IndexFormatError(f"the {table} shards hold more rows than the manifest's "
                                       f"{state.rows}; run `mmindex doctor`")
            ids[filled:filled + len(chunk_ids)], vectors[filled:filled + len(chunk)] = \
                chunk_ids, chunk
            filled += len(chunk_ids)
    return ids[:filled], vectors[:filled]


def checksum_problem(root: Path, state: TableState, relative: str) -> str | None:
    """Why a shard's bytes are not the bytes committed, or None (also when no checksum was
    recorded: a manifest from before checksums)."""
    recorded = (state.checksums or {}).get(relative)
    if recorded is None:
        return None
    try:
        actual = file_sha256(Path(root) / relative)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if actual != recorded:
        return (f"its bytes differ from the SHA-256 recorded when it was committed "
                f"({actual[:12]}… instead of {recorded[:12]}…): it was damaged on disk")
    return None


def read_vectors(root: Path, manifest: Manifest, table: str):
    """The FAISS index of a table, checked against the table's row count."""
    from mmindex.index.vectors import VectorIndex

    relative = manifest.tables[table].faiss
    if relative is None:
        return VectorIndex.empty(manifest.model.dim)
    path = Path(root) / relative
    try:
        vectors = VectorIndex.load(path)  # an ivfpq file's exact vectors stay memory-mapped
    except FileNotFoundError:
        raise MissingFileError(f"FAISS file {path} is missing; run `mmindex doctor`") from None
    except (RuntimeError, OSError, IndexFormatError) as exc:  # faiss: RuntimeError
        raise IndexFormatError(f"FAISS file {path} is damaged ({str(exc).splitlines()[0]}); "
                               "run `mmindex doctor --repair`") from None
    dim = int(vectors.index.d)
    if vectors.count != manifest.tables[table].rows or dim != manifest.model.dim:
        raise IndexFormatError(
            f"FAISS file {path} does not match the {table} table ({vectors.count} vectors of "
            f"dim {dim}, {manifest.tables[table].rows} rows of dim {manifest.model.dim}); "
            "run `mmindex doctor --repair`")
    return vectors


class StoreWriter:
    """The one writer of an index; holds the lock from open to close."""

    def __init__(self, root: Path, repairing: bool = False):
        """`repairing` (doctor only) takes the lock without trusting the manifest on disk."""
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _not_writable(self.root, exc) from None
        self._lock_handle = _acquire_lock(self.root)
        self.manifest: Manifest | None = None  # None until the model of a new index is known
        self._worker_prefixes: set[str] = set()  # shards being written for this writer
        if repairing:
            return
        try:
            self._open_existing()
        except BaseException:
            self.close()  # a refused open must not keep the lock
            raise

    def _open_existing(self) -> None:
        if (self.root / MANIFEST).exists():
            self.manifest = read_manifest(self.root)
            missing = sorted(f for f in self.manifest.files() if not (self.root / f).is_file())
            if missing:  # a cheap stat, so even an ingest with nothing to do reports damage
                raise MissingFileError(f"{self.root / missing[0]} is missing ({len(missing)} "
                                       "files in all); run `mmindex doctor`")
            self.collect_garbage()  # leftovers of a killed writer
        elif data_files(self.root):
            # A fresh manifest's first commit would collect these as garbage: refuse instead.
            raise IndexFormatError(f"{self.root} holds index files but no {MANIFEST}; run "
                                   "`mmindex doctor --repair` to rebuild it from the shards")

    def initialise(self, model: EncoderInfo) -> None:
        """Give a new index its model; an existing one keeps the manifest it has."""
        if self.manifest is None:
            manifest = _empty_manifest(model)
            try:
                self._write_manifest(manifest)
            except OSError as exc:
                raise IndexWriteError(f"could not create the index at {self.root}: "
                                      f"{exc.strerror or exc}") from exc
            self.manifest = manifest

    def new_id(self) -> int:
        """Ids are never reused, so a stale reference can't point at another file's row."""
        row_id = self.manifest.next_id
        self.manifest = replace(self.manifest, next_id=row_id + 1)
        return row_id

    def worker_prefix(self) -> str:
        """A name prefix for shards that workers write for this writer to adopt later.
        Until this writer closes, its commits' garbage collection spares files under it (they
        are in flight); after a crash no writer holds it, so the next one collects them."""
        prefix = f"g{self.manifest.generation + 1:06d}-w{uuid.uuid4().hex[:8]}-"
        self._worker_prefixes.add(prefix)
        return prefix

    def end_worker_writes(self, prefix: str) -> None:
        """The workers given `prefix` are done: a file under it that no commit adopted (a
        retried task's partial shard) is garbage now."""
        self._worker_prefixes.discard(prefix)
        self.collect_garbage()

    def read_faiss(self, table: str) -> bytes | None:
        relative = self.manifest.tables[table].faiss
        return (self.root / relative).read_bytes() if relative else None

    def close(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def commit(self, changes: dict[str, TableChange], faiss_blobs: dict[str, bytes],
               index_params: dict[str, dict] | None = None) -> Manifest:
        """Write a new generation. A failed write leaves the previous one live and raises
        IndexWriteError naming the cause; the files it had written are removed.
        `index_params` records each FAISS file's kind and parameters in the manifest.
        Adopted shards are checked first (a mismatch commits nothing)."""
        for name, change in changes.items():
            for shard in change.adopt:
                self._check_adopted(name, shard)
        try:
            manifest = self._write_generation(changes, faiss_blobs, index_params or {})
        except OSError as exc:
            self._discard_failed_commit()
            raise IndexWriteError(
                f"could not commit generation {self.manifest.generation + 1} of {self.root}: "
                f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}; "
                f"the index is unchanged at generation {self.manifest.generation}") from exc
        faults.point("store.manifest.renamed")
        self.manifest = manifest
        self.collect_garbage()
        faults.point("store.committed")
        return manifest

    def _write_generation(self, changes, faiss_blobs, index_params) -> Manifest:
        generation = self.manifest.generation + 1
        tables = dict(self.manifest.tables)
        for name, change in changes.items():
            tables[name] = self._apply(name, tables[name], change, generation)
        for name, blob in faiss_blobs.items():
            relative = f"faiss/{name}-g{generation:06d}-{uuid.uuid4().hex[:8]}.faiss"
            _write_durably(self.root / relative, blob)
            tables[name] = replace(tables[name], faiss=relative, index=index_params.get(name))
        manifest = replace(self.manifest, generation=generation, tables=tables, updated=time.time())
        self._write_manifest(manifest)
        return manifest

    def _discard_failed_commit(self) -> None:
        """Remove a failed commit's files, unless its manifest did land (then keep them)."""
        try:
            if read_manifest(self.root).generation == self.manifest.generation:
                self.collect_garbage()
        except (OSError, MmindexError):
            pass  # best effort: the next writer collects whatever is left

    def _apply(self, name: str, state: TableState, change: TableChange, generation: int):
        shards, rows = list(state.shards), state.rows
        checksums = dict(state.checksums or {})
        if change.remove_ids:
            shards, removed = self._rewrite_without(name, shards, change.remove_ids, generation,
                                                    checksums)
            rows -= removed
        if change.add is not None and change.add.num_rows:
            schema = table_schema(name, self.manifest.model.dim)
            added = conform(change.add, schema).cast(schema)  # a column it lacks: null
            for start in range(0, added.num_rows, MAX_SHARD_ROWS):
                shard = self._write_shard(name, added.slice(start, MAX_SHARD_ROWS), generation)
                checksums[shard] = file_sha256(self.root / shard)
                shards.append(shard)
            rows += added.num_rows
        for shard in change.adopt:
            shards.append(shard.relative)
            checksums[shard.relative] = shard.sha256
            rows += shard.rows
        checksums = {s: checksums[s] for s in shards if s in checksums}
        return replace(state, shards=tuple(shards), rows=rows, checksums=checksums or None)

    def _rewrite_without(self, name, shards, remove_ids, generation, checksums):
        remove = pa.array(sorted(remove_ids), pa.int64())
        kept, removed = [], 0
        for shard in shards:
            ids = read_shard(self.root, shard, ["id"]).column("id")
            doomed = pc.is_in(ids, value_set=remove)
            count = pc.sum(doomed).as_py() or 0
            if count == 0:
                kept.append(shard)
                continue
            removed += count
            survivors = read_shard(self.root, shard).filter(pc.invert(doomed))
            if survivors.num_rows:
                kept.append(self._write_shard(name, survivors, generation))
                checksums[kept[-1]] = file_sha256(self.root / kept[-1])
        return kept, removed

    def _write_shard(self, name: str, table: pa.Table, generation: int) -> str:
        relative = shard_name(name, f"g{generation:06d}-")
        write_shard(self.root, relative, table, self.manifest.model)
        return relative

    def _check_adopted(self, name: str, shard: WrittenShard) -> None:
        """A worker's shard is committed only if it is a new file of this table, of this
        index's model and schema, with the rows and the SHA-256 its worker reported."""
        problem = _adoption_problem(self.root, name, shard, self.manifest)
        if problem:
            raise IndexWriteError(
                f"cannot adopt {self.root / shard.relative} into the {name} table: {problem}; "
                f"the index is unchanged at generation {self.manifest.generation}")

    def _write_manifest(self, manifest: Manifest) -> None:
        _write_durably(self.root / MANIFEST, manifest.to_json().encode())

    def collect_garbage(self) -> None:
        live = self.manifest.files()
        in_flight = tuple(self._worker_prefixes)
        for folder in list(TABLES) + ["faiss"]:
            for path in (self.root / folder).glob("*"):
                if path.relative_to(self.root).as_posix() not in live and \
                        not (in_flight and path.name.startswith(in_flight)):
                    path.unlink(missing_ok=True)
        for tmp in self.root.glob("*.tmp"):
            tmp.unlink(missing_ok=True)


def shard_name(table: str, prefix: str) -> str:
    """A new shard's path relative to the index root: a prefix, then a random part."""
    return f"{table}/{prefix}{uuid.uuid4().hex[:12]}.parquet"


def rows_to_table(table: str, rows: list[dict], vectors, dim: int) -> pa.Table | None:
    """Rows (dicts of the table's columns) and their vectors as an Arrow table of the table's
    schema (schema.py is the one list of columns); None for no rows."""
    if not rows:
        return None
    schema = table_schema(table, dim)
    if table not in VECTOR_TABLES:
        return pa.Table.from_pylist(rows, schema=schema)
    flat = pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1), pa.float32())  # (N*D,)
    embedding = pa.FixedSizeListArray.from_arrays(flat, dim)
    meta = pa.Table.from_pylist(rows, schema=schema.remove(schema.get_field_index("embedding")))
    return meta.append_column(schema.field("embedding"), embedding)


def _adoption_problem(root: Path, name: str, shard: WrittenShard, manifest: Manifest) -> str | None:
    folder, _, file = shard.relative.partition("/")
    if folder != name or "/" in file or not file.endswith(".parquet") or file.startswith("."):
        return f"it is not a shard name of the {name} table"
    if shard.relative in manifest.files():
        return "the index already holds it"
    try:
        with pq.ParquetFile(root / shard.relative) as parquet:
            rows, schema = parquet.metadata.num_rows, parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        return f"it cannot be read ({exc})"
    if rows != shard.rows:
        return f"it holds {rows} rows, its worker reported {shard.rows}"
    expected = table_schema(name, manifest.model.dim)
    for column in schema:
        if expected.get_field_index(column.name) < 0 or \
                expected.field(column.name).type != column.type:
            return f"its column {column.name} ({column.type}) is not in the table's schema"
    missing = [f.name for f in expected if not f.nullable and f.name not in schema.names]
    if missing or (name in VECTOR_TABLES and "embedding" not in schema.names):
        return f"it lacks the columns {missing or ['embedding']}"
    model = json.loads((schema.metadata or {}).get(MODEL_METADATA, b"null"))
    if model != json.loads(json.dumps(asdict(manifest.model))):
        return f"it was written for another model ({(model or {}).get('spec')})"
    if file_sha256(root / shard.relative) != shard.sha256:
        return "its bytes are not the ones its worker reported (SHA-256 differs)"
    return None


def data_files(root: Path) -> list[Path]:
    """Every shard and FAISS file in an index directory, named by the manifest or not."""
    return sorted(p for folder in list(TABLES) + ["faiss"]
                  for p in (Path(root) / folder).glob("*") if p.is_file())


def _empty_manifest(model: EncoderInfo) -> Manifest:
    tables = {name: TableState() for name in TABLES}
    return Manifest(FORMAT_VERSION, 0, model, 0, tables)


def _write_durably(target: Path, data: bytes) -> None:
    """Temporary file, fsync, atomic rename, fsync of the folder: all or nothing on a crash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data[: len(data) // 2])
        faults.point("store.write.midway")  # a crash or a full disk half-way through a file
        handle.write(data[len(data) // 2:])
        handle.flush()
        os.fsync(handle.fileno())
    faults.point("store.write.synced")
    os.replace(tmp, target)
    _fsync(target.parent)


def _fsync(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _acquire_lock(root: Path):
    """flock is released by the kernel when its holder dies, so a stale lock frees itself.
    The lock is the first file a writer opens for writing, so it is where a read-only
    directory shows."""
    try:
        handle = open(root / LOCK, "a+")
    except OSError as exc:
        raise _not_writable(root, exc) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise IndexLockedError(f"index {root} is being written by {holder}; wait for it to finish")
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})")
    handle.flush()
    return handle


def _not_writable(root: Path, exc: OSError) -> IndexNotWritableError:
    return IndexNotWritableError(
        f"cannot write to the index directory {root} ({exc.strerror or exc}); ingest into a "
        "writable --index, or make this one writable (search, info and doctor can still "
        "read it)")


__all__ = [
    "VECTOR_TABLES",
    "IndexWriteError",
    "Manifest",
    "MissingFileError",
    "StoreWriter",
    "TableChange",
    "TableState",
    "WrittenShard",
    "data_files",
    "read_manifest",
    "read_matching",
    "read_matching_vectors",
    "read_shard",
    "read_table",
    "read_vectors",
]

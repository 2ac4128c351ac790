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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmindex.errors import IndexFormatError, IndexLockedError
from mmindex.models.encoder import EncoderInfo
from mmindex.schema import FORMAT_VERSION, TABLES, VECTOR_TABLES, table_schema

MANIFEST = "manifest.json"
LOCK = "lock"
MAX_SHARD_ROWS = 50_000  # bounds what a copy-on-write delete rewrites


@dataclass(frozen=True)
class TableState:
    shards: tuple[str, ...] = ()  # paths relative to the index root
    rows: int = 0
    faiss: str | None = None  # vector tables only


@dataclass(frozen=True)
class Manifest:
    format_version: int
    generation: int
    model: EncoderInfo
    next_id: int
    tables: dict[str, TableState]
    updated: float = field(default_factory=time.time)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str, where: Path) -> "Manifest":
        try:
            data = json.loads(text)
            version = int(data["format_version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexFormatError(f"{where} is damaged ({exc}); run `mmindex doctor`") from None
        if version > FORMAT_VERSION:
            raise IndexFormatError(
                f"{where} was written by a newer mmindex (format {version}, this one reads up "
                f"to {FORMAT_VERSION}); upgrade mmindex to use this index"
            )
        try:
            tables = {name: TableState(tuple(t["shards"]), t["rows"], t.get("faiss"))
                      for name, t in data["tables"].items()}
            return cls(version, data["generation"], EncoderInfo(**data["model"]),
                       data["next_id"], tables, data.get("updated", 0.0))
        except (KeyError, TypeError) as exc:
            raise IndexFormatError(f"{where} is damaged ({exc}); run `mmindex doctor`") from None


@dataclass
class TableChange:
    """What one commit does to one table."""

    add: pa.Table | None = None
    remove_ids: set[int] = field(default_factory=set)


def read_manifest(root: Path) -> Manifest:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"no index at {root} (no {MANIFEST}); run `mmindex ingest` first")
    return Manifest.from_json(path.read_text(), path)


def read_table(root: Path, manifest: Manifest, table: str, columns=None) -> pa.Table:
    """All live rows of a table at the manifest's generation."""
    schema = table_schema(table, manifest.model.dim)
    shards = [pq.read_table(Path(root) / s, columns=columns) for s in manifest.tables[table].shards]
    if not shards:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(shards)


class StoreWriter:
    """The one writer of an index; holds the lock from open to close."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_handle = _acquire_lock(self.root)
        self.manifest: Manifest | None = None  # None until the model of a new index is known
        if (self.root / MANIFEST).exists():
            self.manifest = read_manifest(self.root)
            self.collect_garbage()  # leftovers of a killed writer

    def initialise(self, model: EncoderInfo) -> None:
        """Give a new index its model; an existing one keeps the manifest it has."""
        if self.manifest is None:
            self.manifest = _empty_manifest(model)
            self._write_manifest(self.manifest)

    def new_id(self) -> int:
        """Ids are never reused, so a stale reference can't point at another file's row."""
        row_id = self.manifest.next_id
        self.manifest = replace(self.manifest, next_id=row_id + 1)
        return row_id

    def read_faiss(self, table: str) -> bytes | None:
        relative = self.manifest.tables[table].faiss
        return (self.root / relative).read_bytes() if relative else None

    def close(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def commit(self, changes: dict[str, TableChange], faiss_blobs: dict[str, bytes]) -> Manifest:
        generation = self.manifest.generation + 1
        tables = dict(self.manifest.tables)
        for name, change in changes.items():
            tables[name] = self._apply(name, tables[name], change, generation)
        for name, blob in faiss_blobs.items():
            relative = f"faiss/{name}-g{generation:06d}-{uuid.uuid4().hex[:8]}.faiss"
            _write_durably(self.root / relative, blob)
            tables[name] = replace(tables[name], faiss=relative)
        manifest = replace(self.manifest, generation=generation, tables=tables, updated=time.time())
        self._write_manifest(manifest)
        self.manifest = manifest
        self.collect_garbage()
        return manifest

    def _apply(self, name: str, state: TableState, change: TableChange, generation: int):
        shards, rows = list(state.shards), state.rows
        if change.remove_ids:
            shards, removed = self._rewrite_without(name, shards, change.remove_ids, generation)
            rows -= removed
        if change.add is not None and change.add.num_rows:
            schema = table_schema(name, self.manifest.model.dim)
            added = change.add.select(schema.names).cast(schema)
            for start in range(0, added.num_rows, MAX_SHARD_ROWS):
                shards.append(self._write_shard(name, added.slice(start, MAX_SHARD_ROWS), generation))
            rows += added.num_rows
        return replace(state, shards=tuple(shards), rows=rows)

    def _rewrite_without(self, name, shards, remove_ids, generation):
        remove = pa.array(sorted(remove_ids), pa.int64())
        kept, removed = [], 0
        for shard in shards:
            ids = pq.read_table(self.root / shard, columns=["id"]).column("id")
            doomed = pc.is_in(ids, value_set=remove)
            count = pc.sum(doomed).as_py() or 0
            if count == 0:
                kept.append(shard)
                continue
            removed += count
            survivors = pq.read_table(self.root / shard).filter(pc.invert(doomed))
            if survivors.num_rows:
                kept.append(self._write_shard(name, survivors, generation))
        return kept, removed

    def _write_shard(self, name: str, table: pa.Table, generation: int) -> str:
        relative = f"{name}/g{generation:06d}-{uuid.uuid4().hex[:12]}.parquet"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
        _fsync(target)
        return relative

    def _write_manifest(self, manifest: Manifest) -> None:
        _write_durably(self.root / MANIFEST, manifest.to_json().encode())

    def collect_garbage(self) -> None:
        live = {s for t in self.manifest.tables.values() for s in t.shards}
        live |= {t.faiss for t in self.manifest.tables.values() if t.faiss}
        for folder in list(TABLES) + ["faiss"]:
            for path in (self.root / folder).glob("*"):
                if path.relative_to(self.root).as_posix() not in live:
                    path.unlink(missing_ok=True)
        for tmp in self.root.glob("*.tmp"):
            tmp.unlink(missing_ok=True)


def _empty_manifest(model: EncoderInfo) -> Manifest:
    tables = {name: TableState() for name in TABLES}
    return Manifest(FORMAT_VERSION, 0, model, 0, tables)


def _write_durably(target: Path, data: bytes) -> None:
    """Temporary file, fsync, atomic rename, fsync of the folder: all or nothing on a crash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
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
    """flock is released by the kernel when its holder dies, so a stale lock frees itself."""
    handle = open(root / LOCK, "a+")
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


__all__ = ["Manifest", "TableState", "TableChange", "StoreWriter", "read_manifest", "read_table",
           "VECTOR_TABLES"]

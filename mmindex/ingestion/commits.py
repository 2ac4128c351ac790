"""The pending commit of an ingest pass: rows, removals and worker-written shards waiting for
the next generation, and the in-memory FAISS indexes of the vector tables among them.

The images-and-texts pass (run.py) and the tiles pass (tiles.py) each hold one, over their
own tables, so both commit, grow their FAISS indexes and rebuild them the same way."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from mmindex.index import store
from mmindex.index.schema import VECTOR_TABLES
from mmindex.index.vectors import VectorIndex


class CommitBuffer:
    """Rows and removals of `tables` waiting for the next commit, made every `commit_every`
    rows or `commit_seconds` (a killed ingest loses at most that much work)."""

    def __init__(self, writer: store.StoreWriter, tables: Iterable[str], commit_every: int,
                 commit_seconds: float):
        self.writer, self.tables = writer, tuple(tables)
        self.commit_every, self.commit_seconds = commit_every, commit_seconds
        self.indexes: dict[str, VectorIndex] = {}
        self._reset()

    def _reset(self) -> None:
        vector_tables = [t for t in self.tables if t in VECTOR_TABLES]
        self.rows = {t: [] for t in self.tables}
        self.vectors = {t: [] for t in vector_tables}
        self.removals = {t: set() for t in self.tables}
        self.adopted = {t: [] for t in vector_tables}  # shards workers wrote
        self.last_commit = time.monotonic()

    def open_indexes(self) -> None:
        for table in self.tables:  # checked: a mismatched FAISS file must not grow
            if table in VECTOR_TABLES:
                self.indexes[table] = store.read_vectors(self.writer.root, self.writer.manifest,
                                                         table)

    def add(self, table: str, row: dict, vector) -> None:
        self.rows[table].append(row)
        if vector is not None:
            self.vectors[table].append(np.asarray(vector, dtype=np.float32))

    def remove(self, table: str, ids) -> None:
        self.removals[table].update(int(i) for i in ids)

    def adopt(self, table: str, shard: store.WrittenShard) -> None:
        self.adopted[table].append(shard)

    def pending(self) -> int:
        rows = sum(len(r) for r in self.rows.values())
        removals = sum(len(r) for r in self.removals.values())
        return rows + removals + sum(s.rows for shards in self.adopted.values() for s in shards)

    def maybe_commit(self) -> None:
        """Call it only between whole units (a file's rows, an image's tiles): a generation
        must never hold part of one, or a re-run would take it for done."""
        waited = time.monotonic() - self.last_commit
        if self.pending() >= self.commit_every or (
                self.pending() and waited >= self.commit_seconds):
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Commit what is pending; `force` commits even nothing, so that a change made to
        the writer's manifest alone (the tiling) lands."""
        if not (self.pending() or force):
            return
        changes, blobs = {}, {}
        dim = self.writer.manifest.model.dim
        for table, rows in self.rows.items():
            added = store.rows_to_table(table, rows, self.vectors.get(table), dim)
            adopted = tuple(self.adopted.get(table, ()))
            changes[table] = store.TableChange(added, self.removals[table], adopted)
            if table in self.indexes:
                index = self.indexes[table]
                index.remove(self.removals[table])
                if added is not None:
                    index.add(np.array([r["id"] for r in rows]), np.stack(self.vectors[table]))
                for shard in adopted:  # read back in chunks: the driver's memory stays flat
                    for ids, vectors in store.shard_vectors(self.writer.root, shard.relative):
                        index.add(ids, vectors)
                blobs[table] = index.to_bytes()
        self.writer.commit(changes, blobs, {t: ix.describe() for t, ix in self.indexes.items()})
        self._reset()

    def finish(self, force: bool = False) -> None:
        """The last commit of the pass, then the rebuild of any index it outgrew."""
        self.flush(force)
        self.rebuild_outgrown_indexes()

    def rebuild_outgrown_indexes(self) -> None:
        """Flat below the size threshold, IVF above, lists sized to the collection: rebuild
        from the stored embeddings when that no longer holds (no re-encoding). A commit of
        its own, after the rows are committed: the store is then the whole truth, and a
        crash between the two leaves a usable index that the next pass rebuilds."""
        for table, index in self.indexes.items():
            if index.needs_rebuild():
                ids, vectors = store.stored_vectors(self.writer.root, self.writer.manifest, table)
                rebuilt = VectorIndex.build(ids, vectors, self.writer.manifest.model.dim)
                self.indexes[table] = rebuilt
                self.writer.commit({}, {table: rebuilt.to_bytes()}, {table: rebuilt.describe()})


"""The open index of the newest generation: reopened when a writer commits a new one.

A reader snapshots one generation (see docs/decisions.md), so a long-lived server must
notice commits itself. Each request stats manifest.json (a writer replaces it by rename,
so its inode and mtime change); only then is the manifest read and, if its generation
moved, the index reopened. Requests already holding the old Index finish on it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mmindex.index import store
from mmindex.search.searcher import Index


class LiveIndex:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._index: Index | None = None
        self._signature: tuple | None = None
        self._lock = threading.Lock()

    def get(self) -> Index:
        """The current Index; raises IndexFormatError while there is none."""
        signature = self._manifest_signature()
        with self._lock:
            if self._index is None or signature != self._signature:
                self._refresh(signature)
            return self._index

    def _manifest_signature(self) -> tuple | None:
        try:
            st = os.stat(self.root / store.MANIFEST)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self, signature: tuple | None) -> None:
        # IndexFormatError when the manifest is missing or damaged
        self._index = Index(self.root) if self._index is None else self._index.reopened()
        self._signature = signature

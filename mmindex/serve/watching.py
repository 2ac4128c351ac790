"""`serve --watch`: the folder watcher of mmindex.ingestion.watch, in a thread of the server.

The watcher only commits new generations; LiveIndex notices them at the next request, so
searches see added, moved and deleted files without anything else changing. It starts and
stops with the app (its lifespan), and what it last did shows in /api/status."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from mmindex.errors import MmindexError
from mmindex.ingestion.config import IngestConfig
from mmindex.ingestion.watch import DEFAULT_SETTLE_S, watch

log = logging.getLogger("mmindex.serve")

RETRY_S = 10.0  # after a failed first ingest (say, another writer holds the index)
STOP_WAIT_S = 60.0  # an ingest under way finishes its chunk before the watch can stop


class FolderWatch:
    def __init__(self, index_dir: Path, roots: Sequence[Path], *,
                 settle_s: float = DEFAULT_SETTLE_S, retry_s: float = RETRY_S):
        self.config = IngestConfig(roots=tuple(roots), index_dir=Path(index_dir))
        self.settle_s, self.retry_s = settle_s, retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmindex-watch", daemon=True)
        self._lock = threading.Lock()
        self._state = {"roots": [str(r) for r in roots], "ingests": 0, "last": None,
                       "error": None}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> bool:
        """Stop watching; False if an ingest was still running after STOP_WAIT_S (the daemon
        thread then ends with the process, and the index keeps its last whole commit)."""
        self._stop.set()
        self._thread.join(STOP_WAIT_S)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def snapshot(self) -> dict:
        with self._lock:
            return {**self._state, "running": self.alive}

    def _run(self) -> None:
        # watch() raises what its first ingest raises and returns once stopped; later
        # failures reach _failed and the watch goes on. So a failed start is tried again.
        while not self._stop.is_set():
            try:
                watch(self.config, self._stop, on_ingest=self._ingested, on_error=self._failed,
                      settle_s=self.settle_s)
            except MmindexError as exc:
                self._failed(exc)
                self._stop.wait(self.retry_s)

    def _ingested(self, summary) -> None:
        log.info("watch: ingested (%d added, %d removed)", summary.added, summary.removed)
        with self._lock:
            # counts only: a burst's file lists would bloat every status poll
            self._state.update(ingests=self._state["ingests"] + 1, error=None,
                               last={"added": summary.added, "removed": summary.removed})

    def _failed(self, error: MmindexError) -> None:
        log.warning("watch: ingest failed, still watching: %s", error)
        with self._lock:
            self._state["error"] = str(error)

"""A folder that stays indexed: ingest once, then again after each burst of filesystem events.

Events come from watchdog (inotify, FSEvents, ReadDirectoryChangesW, or polling). They are
not applied one by one: an event only marks the index stale, and once no event has arrived
for `settle_s` (or `max_wait_s` after the first, so a steady stream cannot postpone it
forever) the ordinary incremental ingest runs over the roots. That ingest already finds
what was added, changed and deleted by comparing the folder with the index, and a moved
or renamed file keeps its embedding (found by its SHA-256), so a burst of 10,000 new files
is one ingest of 10,000 files, committed in its usual chunks, and a deleted folder is one
ingest that removes its rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mmindex.core.progress import Progress
from mmindex.errors import MmindexError
from mmindex.ingestion.config import IngestConfig
from mmindex.ingestion.run import IngestSummary, ingest

DEFAULT_SETTLE_S = 2.0
DEFAULT_MAX_WAIT_S = 30.0
_READS = {"opened", "closed_no_write"}  # inotify reports reads too


class _Staleness:
    """When the folder last changed, as watchdog reports it (set from its thread)."""

    def __init__(self, ignored: Path):
        self.ignored = str(ignored)  # the index's own folder: its commits are not changes
        self.first: float | None = None
        self.last = 0.0
        self.lock = threading.Lock()

    def dispatch(self, event) -> None:  # watchdog's handler interface
        if getattr(event, "event_type", "") in _READS:
            return  # ingest reading the files it indexes is no change to them
        paths = [getattr(event, "src_path", ""), getattr(event, "dest_path", "")]
        if all(not p or str(p).startswith(self.ignored) for p in paths):
            return
        with self.lock:
            now = time.monotonic()
            self.first = self.first if self.first is not None else now
            self.last = now

    def due(self, settle_s: float, max_wait_s: float) -> bool:
        """True once (then reset) when a burst has settled or waited long enough."""
        with self.lock:
            if self.first is None:
                return False
            now = time.monotonic()
            if now - self.last < settle_s and now - self.first < max_wait_s:
                return False
            self.first = None
            return True


def watch(config: IngestConfig, stop: threading.Event, *,
          on_ingest: Callable[[IngestSummary], None] = lambda summary: None,
          on_error: Callable[[MmindexError], None] = lambda error: None,
          progress: Progress | None = None, settle_s: float = DEFAULT_SETTLE_S,
          max_wait_s: float = DEFAULT_MAX_WAIT_S) -> None:
    """Ingest `config.roots` now and after every settled burst of changes, until `stop` is
    set. A failed ingest (a root deleted, the index locked) is reported to `on_error` and
    the watch goes on: the next change tries again."""
    from watchdog.observers import Observer

    index_dir = Path(config.index_dir).expanduser().absolute()
    config = replace(config, index_dir=index_dir)
    stale = _Staleness(index_dir)
    observer = Observer()
    for root in (Path(r).expanduser().absolute() for r in config.roots):
        folder = root if root.is_dir() else root.parent  # a file root: watch its folder
        if folder.is_dir():  # a missing root: the first ingest says so, by name
            observer.schedule(stale, str(folder), recursive=root.is_dir())
    observer.start()  # before the first ingest: what changes during it is not missed
    try:
        on_ingest(ingest(config, progress))  # errors of the first run are the caller's
        while not stop.wait(0.1):
            if stale.due(settle_s, max_wait_s):
                try:
                    on_ingest(ingest(config, progress))
                except MmindexError as exc:
                    on_error(exc)
    finally:
        observer.stop()
        # bounded: watchdog's inotify reader wakes only on an event after stop (hangs there
        # are reported upstream, gorakhargosh/watchdog#250, #1045); its threads are daemons,
        # so Ctrl-C never waits on them for long
        observer.join(timeout=5)

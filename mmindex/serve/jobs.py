"""Ingest jobs run in a background thread, one at a time (the index has one writer anyway).

The job only records what `mmindex.ingestion.run.ingest` reports through its progress callback;
the ingest itself is the library's."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmindex.errors import MmindexError
from mmindex.ingestion.config import IngestConfig


@dataclass
class IngestJob:
    id: int
    roots: list[str]
    state: str = "queued"  # queued | running | done | failed
    stage: str = ""
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    summary: dict | None = None  # IngestSummary.to_dict() once done
    error: str | None = None  # the library's message once failed

    def to_dict(self) -> dict:
        return asdict(self)


class JobConflict(Exception):
    """A job is already running; the caller answers 409."""


class IngestJobs:
    """Starts ingests of configured roots and keeps the last few jobs for /api/status."""

    def __init__(self, index_dir: Path, run_ingest: Callable, keep: int = 20):
        self.index_dir = Path(index_dir)
        self._run_ingest = run_ingest  # mmindex.ingestion.run.ingest, or a stand-in in tests
        self._keep = keep
        self._jobs: list[IngestJob] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, roots: list[Path]) -> IngestJob:
        with self._lock:
            if any(job.state in ("queued", "running") for job in self._jobs):
                raise JobConflict("an ingest is already running; wait for it to finish")
            job = IngestJob(next(self._ids), [str(r) for r in roots])
            self._jobs = (self._jobs + [job])[-self._keep:]
        threading.Thread(target=self._run, args=(job,), name=f"ingest-{job.id}",
                         daemon=True).start()
        return job

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [job.to_dict() for job in reversed(self._jobs)]

    def _run(self, job: IngestJob) -> None:
        # The server runs the in-process executor: a Ray cluster started from a request
        # thread would outlive the request; large first ingests belong to `mmindex ingest`.
        config = IngestConfig(roots=tuple(Path(r) for r in job.roots), index_dir=self.index_dir,
                              executor="local")
        job.state = "running"
        try:
            summary = self._run_ingest(config, lambda stage, done, total, **metrics:
                                       self._progress(job, stage, done, total))
            job.summary, job.state = summary.to_dict(), "done"
        except MmindexError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # noqa: BLE001 - a crashed job must still say so in status
            job.error, job.state = f"unexpected {type(exc).__name__}: {exc}", "failed"
        finally:
            job.finished = time.time()

    @staticmethod
    def _progress(job: IngestJob, stage: str, done: int, total: int) -> None:
        job.stage, job.done, job.total = stage, done, total

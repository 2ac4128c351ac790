"""Run the app with uvicorn: the entry point of `mmindex serve`."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from mmindex.errors import UserInputError

log = logging.getLogger("mmindex.serve")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(index_dir: Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          ingest_roots: Sequence[Path] = (), device: str = "cpu",
          generator: str | None = None, watch_roots: Sequence[Path] = ()) -> None:
    try:
        import uvicorn

        from mmindex.serve.answers import Answers
        from mmindex.serve.app import create_app
    except ImportError as exc:
        raise UserInputError(f"serving needs the serve extra ({exc.name} is missing): "
                             "pip install 'mmindex[serve]'") from None
    loopback = is_loopback(host)
    if not loopback and token is None:
        log.warning("serving %s on %s without --token: anyone who can reach it can search "
                    "the collection and read its images", index_dir, host)
    # On loopback, refuse other Host headers: a web page that rebinds its DNS name to
    # 127.0.0.1 could otherwise read the API from the user's own browser.
    allowed = sorted({*LOOPBACK_NAMES, host.strip("[]")}) if loopback else None
    _one_torch_thread_per_request()
    app = create_app(index_dir, token=token, ingest_roots=ingest_roots, allowed_hosts=allowed,
                     answers=Answers(device=device, generator=generator),
                     watch_roots=watch_roots)
    uvicorn.run(app, host=host, port=port, log_level="info")


def _one_torch_thread_per_request() -> None:
    """Concurrent requests already run in parallel threads; torch's own intra-op pool on top
    oversubscribes the cores. Measured on 2 busy cores (benchmarks/serve_load.py, tiny
    model): one thread gave 12-15 ms a lone search and 93-136 searches/s in bursts of 100,
    the default two 36-54 ms and 69-73/s. OMP_NUM_THREADS, when set, wins."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    torch.set_num_threads(1)

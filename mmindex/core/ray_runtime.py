"""Starting or joining Ray, in one place for every job that runs on it (ingest, finetune).

Ray is imported here and in the executors only, and only when a job asks for it: importing
it costs seconds, and most runs never need it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from mmindex.errors import ClusterError


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator:
    """Yield the `ray` module connected to a cluster: the one already joined in this process,
    the one at `address` (or $RAY_ADDRESS, which `ray job submit` sets), or a local Ray with
    `num_cpus` started for this block and shut down after it. Raises ClusterError."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    joining = bool(address or os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(address=address, num_cpus=None if joining else num_cpus,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or os.environ.get("RAY_ADDRESS")
        raise ClusterError(
            f"cannot connect to the Ray cluster at {where}: {exc}; start one with "
            "`ray start --head`, or leave --ray-address out to run a local Ray"
            if joining else f"cannot start a local Ray: {exc}") from exc
    _quiet_ray_data_console()
    try:
        yield ray
    finally:
        ray.shutdown()  # a Ray this block started holds CPUs the next step needs


def _quiet_ray_data_console() -> None:
    """Ray Data prints INFO lines (each dataset's plan, "execution finished in ...") and a
    warning that its progress bars are off (mmindex draws its own) on the driver's stderr,
    between mmindex's progress and its summary. Its console handler is raised to WARNING,
    which keeps the warnings a user needs (a pool the cluster cannot place), without that
    one; Ray Data's log file in the session directory (`ray-data.log`) still has them all."""
    import logging

    import ray.data  # noqa: F401 - configures the 'ray.data' loggers on import

    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.WARNING)
            handler.addFilter(_not_the_progress_bar_notice)  # added once: same function


def _not_the_progress_bar_notice(record) -> bool:
    return "Progress bars disabled" not in record.getMessage()

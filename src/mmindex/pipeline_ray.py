"""The encode stage as a Ray Data pipeline: the same batch encoders as the local loop, in an
actor pool that builds the model inside each actor. A local Ray is started for the job
unless an address of an existing cluster is given (whose workers need mmindex installed)."""

from __future__ import annotations

import os
from typing import Iterator

from mmindex.errors import MmindexError


def run_ray(worker_cls, worker_kwargs: dict, column: str, values: list, batch_size: int,
            address: str | None) -> Iterator[dict]:
    import ray

    started_here = _ensure_ray(ray, address)
    try:
        dataset = ray.data.from_items([{column: v} for v in values])
        # One actor holding one CPU leaves the other cores to Ray's own tasks (a pool that
        # takes every CPU stalls the read stage: FIELD_NOTES.md); inside, torch uses them all.
        encoded = dataset.map_batches(
            worker_cls,
            fn_constructor_kwargs={**worker_kwargs, "threads": os.cpu_count()},
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=1,
            num_cpus=1,
        )
        yield from encoded.iter_batches(batch_size=None, batch_format="numpy")
    finally:
        if started_here:
            ray.shutdown()


def _ensure_ray(ray, address: str | None) -> bool:
    """Connect to `address`, or start a local Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise MmindexError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc
    _quiet_progress(ray)
    return True


def _quiet_progress(ray) -> None:
    """mmindex draws its own progress bar; Ray Data's would interleave with it."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False

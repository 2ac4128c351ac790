"""The encode stage as a Ray Data pipeline: the same batch encoders as the local loop, in an
actor pool that builds the model inside each actor. A local Ray is started for the job
unless an address of an existing cluster is given (whose workers need mmindex installed)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ActorPool:
    """How the encoders spread over Ray. The default, one actor holding one CPU, leaves the
    other cores to Ray's own tasks (a pool that takes every CPU stalls the read stage: two
    1-CPU actors on a 2-CPU node never ran the read task) while torch inside it uses them
    all. A cluster asks for more actors, each holding `cpus` (torch then uses that many) and
    a GPU when the model runs on one."""

    actors: int = 1
    cpus: int = 0  # 0: hold 1, use every core of the node
    gpu: bool = False

    def map_batches_options(self, ray) -> dict:
        # a fixed-size pool through `compute`: Ray 2.51+ deprecates `concurrency=` for it
        return {"compute": ray.data.ActorPoolStrategy(size=self.actors),
                "num_cpus": self.cpus or 1, **({"num_gpus": 1} if self.gpu else {})}


def run_ray(worker_cls, worker_kwargs: dict, column: str, values: list, batch_size: int,
            address: str | None, pool: ActorPool = ActorPool()) -> Iterator[dict]:
    from mmindex.core.ray_runtime import ray_session

    with ray_session(address) as ray:
        _quiet_progress(ray)
        dataset = ray.data.from_items([{column: v} for v in values])
        encoded = dataset.map_batches(
            worker_cls,
            fn_constructor_kwargs={**worker_kwargs, "threads": pool.cpus or None},
            batch_size=batch_size,
            batch_format="numpy",
            **pool.map_batches_options(ray),
        )
        yield from encoded.iter_batches(batch_size=None, batch_format="numpy")



def _quiet_progress(ray) -> None:
    """mmindex draws its own progress bar; Ray Data's would interleave with it."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False

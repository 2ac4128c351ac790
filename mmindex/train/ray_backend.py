"""`--workers N`: the same training loop on N Ray Train workers (TorchTrainer, gloo on CPUs).

Workers receive the plan (paths and captions, no model) and build their own encoder, as
clip-retrieval's distributor does; each takes its slice of every global batch, the features
are gathered for the loss, and `combine_gradients` gives every worker the single-process
gradient. Rank 0 evaluates and writes the checkpoint and resume state into the output
directory, so the driver reads the history from there: the output directory must be on
storage every worker can reach (one machine, or a shared file system on a cluster).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mmindex.core.ray_runtime import ray_session
from mmindex.errors import UserInputError
from mmindex.train.checkpoints import read_training_record
from mmindex.train.config import EpochMetrics, TrainPlan
from mmindex.train.loop import train_loop


def train_distributed(plan: TrainPlan, on_epoch=None) -> list[EpochMetrics]:
    """Run `train_loop` on `plan.config.workers` Ray workers (a local Ray, or the cluster at
    `ray_address`); returns the epoch history."""
    config = plan.config
    with ray_session(config.ray_address, num_cpus=max(config.workers, os.cpu_count() or 1)):
        _fit(plan, config)
    history, _ = read_training_record(Path(config.out_dir))
    for metrics in history if on_epoch else ():
        on_epoch(metrics)
    return history


def _fit(plan: TrainPlan, config) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cpus = worker_cpus(config.workers)
    threads = config.threads or max(1, int(cpus))
    storage = tempfile.mkdtemp(prefix="mmindex-ray-")  # Ray's run records; we keep none
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"plan": plan, "threads": threads},
        torch_config=TorchConfig(backend="gloo" if config.device == "cpu" else "nccl"),
        scaling_config=ScalingConfig(
            num_workers=config.workers,
            use_gpu=config.device == "cuda",
            resources_per_worker={"CPU": cpus},
        ),
        run_config=RunConfig(storage_path=storage, name="finetune"),
    )
    try:
        trainer.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def _worker(loop_config: dict) -> None:
    import ray.train
    import torch

    torch.set_num_threads(loop_config["threads"])  # never more threads than CPUs held
    context = ray.train.get_context()
    train_loop(
        loop_config["plan"], rank=context.get_world_rank(), world_size=context.get_world_size()
    )


def worker_cpus(workers: int) -> int:
    """CPUs each worker holds (and runs torch threads on), for the cluster's alive nodes."""
    import ray

    nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    return cpus_per_worker(workers, nodes or [float(os.cpu_count() or 1)])


def cpus_per_worker(workers: int, node_cpus: list[float]) -> int:
    """The most CPUs a worker can hold so that `workers` workers fit on nodes of these sizes,
    and never more than an even share of them all, so the workers never oversubscribe the
    cores (two processes with two threads each on two cores ran 10-25x slower). An even
    share alone can fit no node: two workers of 4 on three nodes of 3 CPUs would wait
    forever, where 3 CPUs each fit."""
    total = sum(node_cpus)
    for cpus in range(int(total // workers), 0, -1):
        if sum(int(n // cpus) for n in node_cpus) >= workers:
            return cpus
    sizes = ", ".join(f"{n:g}" for n in node_cpus)
    raise UserInputError(f"--workers {workers} needs a whole CPU for each worker; the Ray "
                         f"cluster's nodes have {sizes} CPUs: ask for fewer workers")

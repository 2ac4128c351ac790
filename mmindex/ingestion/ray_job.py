"""Ingest on Ray: the same batch functions as the local loop, spread over a cluster.

Images run as three Ray Data stages with its backpressure between them:

    planned groups (path, files) -> decode_batch: CPU tasks, scaled by Ray
      -> EncodeImages: an actor pool (CPU or GPU) that builds the model inside each actor
      -> write_shard_batch: CPU tasks, one Parquet shard of the images table each, written
         straight into the index directory under this writer's prefix
      -> the driver: only (shard, rows, sha256, failures) per shard

The write is a task after the encoder, not part of the actor, so Ray Data bundles the
encoders' small outputs (2 KB of embedding a row) into shards of `shard_rows`, whatever the
model's batch size, the last partial shard included, and a GPU never waits on storage.
Texts still stream their embeddings back to the driver (`run_ray`): a corpus's texts are
few next to a photo collection's images, and their rows are built from parsed documents
the driver holds. A local Ray is started for the job unless an address of an existing
cluster is given (whose workers need mmindex installed)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from mmindex.errors import UserInputError
from mmindex.index import store
from mmindex.index.schema import FILE_SCHEMA
from mmindex.ingestion.encoders import ImageBatchEncoder, decode_images, image_columns
from mmindex.models.encoder import EncoderInfo


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

    def check_fits(self, ray) -> None:
        """Refuse a pool that would hold every CPU: the decode and write tasks would never
        run and the job would stall (seen with two 1-CPU actors on a 2-CPU node). Asked of
        a Ray on this machine only: an autoscaling cluster reports what it has now, not
        what it will start for the job."""
        cpus = ray.cluster_resources().get("CPU", 0)
        held = self.actors * (self.cpus or 1)
        if held + 1 > cpus:
            raise UserInputError(
                f"{self.actors} encoder actors holding {self.cpus or 1} CPUs each take {held} of "
                f"the cluster's {cpus:g} CPUs and leave none to decode images; lower --actors "
                "or --actor-cpus, or add CPUs")


BATCHES_PER_TASK = 8  # a decode task takes this many batches: fewer tasks, less Ray overhead


@dataclass(frozen=True)
class ImageJob:
    """What the image stages need, all small and picklable: the model by its spec (each
    actor builds it), its preprocessing (for the decode tasks, which load no model), and
    where and under which names the shards go."""

    spec: str
    precision: str
    device: str
    preprocess: Callable  # the encoder's own: PIL image -> (3, H, W)
    image_size: int
    max_pixels: int
    root_uri: str  # the index root as storage.root_uri gives it (pyarrow.fs opens it)
    prefix: str  # StoreWriter.worker_prefix(): the writer spares these files until adopted
    model: EncoderInfo  # recorded in each shard, checked when it is adopted
    batch_size: int = 32  # images per decode task call and per model call
    shard_rows: int = 2048  # rows per written shard (fewer at the end of the job)
    pdf_dpi: float | None = None  # PDF page items' rendering (data/pdf.py); None: automatic


# What the driver sets in each row it plans: the file's columns and the page (None: a photo)
ITEM_COLUMNS = (*FILE_SCHEMA.names, "page")


class ImageItems:
    """The driver's plan as the pipeline's input: per group of identical files, the path to
    decode (a path or a PDF page item) and the rows to write for it (ITEM_COLUMNS, ids
    assigned by the driver), kept as compact JSON lists rather than dicts: the driver holds
    one per row it dispatches until Ray has them."""

    def __init__(self):
        self.paths: list[str] = []
        self.files: list[str] = []

    def add(self, path: str, files: list[dict]) -> None:
        self.paths.append(path)
        self.files.append(json.dumps([[f[name] for name in ITEM_COLUMNS] for f in files]))

    def table(self):
        import pyarrow as pa

        table = pa.table({"path": self.paths, "files": self.files})
        self.paths, self.files = [], []  # the table is the one copy from here on
        return table


def group_files(files: str) -> list[dict]:
    return [dict(zip(ITEM_COLUMNS, values)) for values in json.loads(files)]


def write_image_shards(items, job: ImageJob, address: str | None,
                       pool: ActorPool = ActorPool()) -> Iterator[dict]:
    """Run the three image stages; yield per written shard {"shard", "rows", "sha256",
    "failures": [{"files": [...], "reason": str}]} (shard "" when every image failed)."""
    from mmindex.core.ray_runtime import ray_session

    with ray_session(address) as ray:
        _quiet_progress(ray)
        if not (address or os.environ.get("RAY_ADDRESS")):
            pool.check_fits(ray)
        step = job.batch_size * BATCHES_PER_TASK
        dataset = ray.data.from_arrow([items.slice(i, step) for i in range(0, items.num_rows, step)])
        del items  # in Ray's object store now
        decoded = dataset.map_batches(
            # Ray Data fuses this stage into the encoder actors when they ask for the same
            # resources (a CPU pool of 1-CPU actors): measured faster on 2 cores than apart
            # (docs/scaling.md); a GPU pool or bigger actors keep it apart, where it counts.
            decode_batch, batch_size=job.batch_size, batch_format="numpy", num_cpus=1,
            fn_kwargs={"preprocess": job.preprocess, "image_size": job.image_size,
                       "max_pixels": job.max_pixels, "pdf_dpi": job.pdf_dpi})
        encoded = decoded.map_batches(
            EncodeImages, batch_size=job.batch_size, batch_format="numpy",
            fn_constructor_kwargs={"spec": job.spec, "precision": job.precision,
                                   "device": job.device, "threads": pool.cpus or None},
            **pool.map_batches_options(ray))
        written = encoded.map_batches(
            write_shard_batch, batch_size=job.shard_rows, batch_format="numpy", num_cpus=0.5,
            fn_kwargs={"root_uri": job.root_uri, "prefix": job.prefix, "model": job.model})
        for batch in written.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["shard"])):
                yield {"shard": str(batch["shard"][i]), "rows": int(batch["rows"][i]),
                       "sha256": str(batch["sha256"][i]),
                       "failures": json.loads(str(batch["failures"][i]))}


def decode_batch(batch: dict, preprocess, image_size: int, max_pixels: int,
                 pdf_dpi: float | None = None) -> dict:
    """Decode + preprocess one batch in a CPU task. Ray Data's columns need a row per item,
    so a failed image gets zero pixels beside ok=False (the encoder skips it)."""
    prepared = decode_images(batch["path"], preprocess, image_size, max_pixels,
                             pdf_dpi=pdf_dpi)
    pixels = prepared.pop("pixels")  # (N_ok, 3, H, W) or None
    ok = np.array(prepared["ok"], dtype=bool)
    shape = tuple(pixels.shape[1:]) if pixels is not None else (3, image_size, image_size)
    full = np.zeros((len(ok), *shape), dtype=np.float32)  # (N, 3, H, W)
    if pixels is not None:
        full[ok] = np.asarray(pixels, dtype=np.float32)
    return {**{k: np.asarray(v) for k, v in prepared.items()}, "files": batch["files"],
            "pixels": full}


class EncodeImages:
    """The encoder actor: ImageBatchEncoder's second half on decoded batches."""

    def __init__(self, spec: str, precision: str, device: str, threads: int | None):
        self.images = ImageBatchEncoder(spec=spec, max_pixels=0, threads=threads,
                                        precision=precision, device=device, decode_threads=1)

    def __call__(self, batch: dict) -> dict:
        ok = batch["ok"].astype(bool)
        pixels = batch.pop("pixels")[ok]  # (N_ok, 3, H, W)
        return self.images.encode({**batch, "pixels": pixels if ok.any() else None})


def write_shard_batch(batch: dict, root_uri: str, prefix: str, model: EncoderInfo) -> dict:
    """One shard of images rows (one per file of each group) from encoded batches, written
    into the index; only its name, row count, checksum and the failures go back."""
    rows, vectors, failures = [], [], []
    values = [name for name in batch if name not in ("files", "embedding")]
    for i, files in enumerate(batch["files"]):
        members = group_files(str(files))
        if not batch["ok"][i]:
            failures.append({"files": members, "reason": str(batch["reason"][i])})
            continue
        columns = image_columns({name: batch[name][i] for name in values})
        rows += [member | columns for member in members]
        vectors += [batch["embedding"][i]] * len(members)
    shard, sha = "", ""
    if rows:
        shard = store.shard_name("images", prefix)
        sha = store.write_shard(root_uri, shard,
                                store.rows_to_table("images", rows, np.stack(vectors), model.dim),
                                model)
    return {"shard": np.array([shard]), "rows": np.array([len(rows)]),
            "sha256": np.array([sha]), "failures": np.array([json.dumps(failures)])}


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

"""The ingest run's frozen configuration. The CLI maps its flags onto it once, at the edge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmindex.data.images import DEFAULT_MAX_PIXELS
from mmindex.data.pdf import DEFAULT_MAX_PAGES
from mmindex.data.tiles import TileSpec
from mmindex.errors import UserInputError


@dataclass(frozen=True)
class IngestConfig:
    roots: tuple[Path, ...]
    index_dir: Path | str  # a directory, or a file:// URI (index/storage.py)
    model: str | None = None  # None: the index's own model, or the default for a new index
    # "local" | "ray" | "auto": Ray from ray_threshold files to encode, or at any size with a
    # ray_address or more than one actor
    executor: str = "auto"
    ray_address: str | None = None  # an existing cluster; None starts a local Ray
    batch_size: int = 32
    commit_every: int = 2048  # rows; a killed ingest loses at most this much work
    commit_seconds: float = 60.0  # ...or this much time
    max_pixels: int = DEFAULT_MAX_PIXELS  # also caps a rendered PDF page (scaled down to fit)
    # PDF pages: rendered at this DPI; None renders each page with its short side at twice
    # the model's input side. A PDF of more pages than max_pdf_pages goes to errors.
    pdf_dpi: float | None = None
    max_pdf_pages: int = DEFAULT_MAX_PAGES
    # "auto" | "fp32" | "bf16" | "int8": see models/registry.load_for_inference
    precision: str = "auto"
    decode_threads: int = 2  # Pillow releases the GIL: decoding overlaps with encoding
    ray_threshold: int = 2000  # below this, Ray's start-up (~6 s) costs more than it saves
    device: str = "cpu"  # "cuda": the encoder on a GPU (each Ray actor then holds one)
    actors: int = 1  # Ray encoder actors; on a cluster, one per GPU or per node's share of CPUs
    actor_cpus: int = 0  # CPUs each Ray actor holds and torch uses; 0: 1 held, all cores used
    # Tiles of large images (data/tiles.py): a TileSpec starts or changes tiling, "off" removes
    # the index's tiles, None keeps what the index recorded (ingestion/tiles.py)
    tiles: TileSpec | str | None = None

    def __post_init__(self):
        if self.executor not in ("local", "ray", "auto"):
            raise UserInputError(f"--executor must be local, ray or auto, not {self.executor!r}")
        if self.actors < 1 or self.actor_cpus < 0:
            raise UserInputError(f"--actors must be >= 1 and --actor-cpus >= 0, not "
                                 f"{self.actors} and {self.actor_cpus}")
        if self.pdf_dpi is not None and not 1 <= self.pdf_dpi <= 1200:
            raise UserInputError(f"--pdf-dpi must be between 1 and 1200, not {self.pdf_dpi}")
        if self.max_pdf_pages < 1:
            raise UserInputError(f"--max-pdf-pages must be at least 1, not {self.max_pdf_pages}")
        if not (self.tiles is None or self.tiles == "off" or isinstance(self.tiles, TileSpec)):
            raise UserInputError(f"tiles must be a TileSpec, 'off' or None, not {self.tiles!r}")

"""What a fine-tuning run is given (FinetuneConfig), what workers receive (TrainPlan) and what
each epoch reports (EpochMetrics): plain data every other train module shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmindex.core.precision import check_precision
from mmindex.data.augment import augment_policy
from mmindex.data.pairs import Pair, Pairs
from mmindex.errors import UserInputError

SIGLIP_INIT_BIAS = -10.0  # SigLIP's initial bias: most pairs are negatives at the start


@dataclass(frozen=True)
class FinetuneConfig:
    pairs: Path
    out_dir: Path
    model: str | None = None  # spec of the starting encoder (see `mmindex models`)
    from_scratch: str | None = None  # or a registered architecture, trained from random weights
    epochs: int = 5
    batch_size: int = 64  # global batch: split evenly across workers
    lr: float | None = None  # None: 1e-3 from scratch, 1e-5 when fine-tuning
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05  # of all steps, linear warm-up before the cosine decay
    grad_clip: float = 1.0
    val_pairs: Path | None = None
    val_fraction: float = 0.1  # of the training images, held out when val_pairs is None
    lock_image: bool = False
    lock_text: bool = False
    unlock_last: int = 0  # blocks (nearest the output) left trainable in a locked tower
    wise_ft: float | None = None  # final weights = (1 - a) * start + a * fine-tuned
    loss: str = "clip"  # clip | siglip
    device: str = "cpu"
    workers: int = 1  # > 1: Ray Train, one process per worker
    ray_address: str | None = None  # an existing cluster for the workers; None: a local Ray
    precision: str = "auto"  # auto: bf16 autocast where the hardware computes bf16 natively
    max_logit_scale: float = 100.0
    seed: int = 0
    resume: bool = False
    threads: int | None = None  # torch threads per process; None: torch's default
    # none | light | strong: caption-preserving image augmentation (data/augment.py); none
    # by default so the documented recipes and earlier checkpoints reproduce exactly
    augment: str = "none"

    def __post_init__(self):
        _check_config(self)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if self.from_scratch else 1e-5


def _check_config(c: FinetuneConfig) -> None:
    if (c.model is None) == (c.from_scratch is None):
        raise UserInputError("give exactly one of --model (fine-tune) or --from-scratch ARCH")
    if c.epochs < 1 or c.batch_size < 2:
        raise UserInputError("--epochs must be at least 1 and --batch-size at least 2")
    if c.loss not in ("clip", "siglip"):
        raise UserInputError(f"--loss must be clip or siglip, not {c.loss!r}")
    check_precision(c.precision)
    augment_policy(c.augment)  # an unknown level is refused before any work starts
    if not 0.0 <= c.val_fraction < 1.0:
        raise UserInputError(f"--val-fraction must be in [0, 1), got {c.val_fraction}")
    if c.wise_ft is not None and not 0.0 <= c.wise_ft <= 1.0:
        raise UserInputError(f"--wise-ft must be in [0, 1], got {c.wise_ft}")
    if c.wise_ft is not None and c.from_scratch:
        raise UserInputError(
            "--wise-ft interpolates towards the starting model; "
            "random starting weights make it meaningless with --from-scratch"
        )
    if c.unlock_last < 0 or (c.unlock_last and not (c.lock_image or c.lock_text)):
        raise UserInputError("--unlock-last N needs --lock-image or --lock-text (and N >= 0)")
    if c.workers < 1 or c.batch_size % c.workers:
        raise UserInputError(
            f"--batch-size {c.batch_size} must split evenly over --workers {c.workers}"
        )
    if c.device not in ("cpu", "cuda"):
        raise UserInputError(f"--device must be cpu or cuda, not {c.device!r}")


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    step: int  # optimizer steps so far
    train_loss: float  # mean over the epoch's steps
    lr: float  # at the epoch's last step
    logit_scale: float
    seconds: float
    val: dict[str, float] | None  # recall@1 figures, see `recall_summary`


@dataclass(frozen=True)
class TrainPlan:
    """Everything a worker needs, small and picklable: it builds the model itself."""

    config: FinetuneConfig
    train: tuple[Pair, ...]
    val: Pairs | None


@dataclass(frozen=True)
class TrainProjectorConfig:
    vision_model: str  # CLIP spec; must be the index's model for `ask` to use the result
    out_dir: Path
    captions: Path | None = None  # pairs file: stage 1
    questions: Path | None = None  # image/question/answer table: stage 2
    llm: str | None = None  # None: MMINDEX_LLM or the installed default
    projector: str = "mlp2x_gelu"
    image_tokens: int | None = 16  # pool each image to this many tokens; None keeps all
    vision_layer: int = -1  # the vision tower's block the tokens come from (-2: a finer grid)
    caption_steps: int = 0
    qa_steps: int = 500
    caption_minutes: float | None = None  # a time budget per stage, whichever comes first
    qa_minutes: float | None = None
    batch_size: int = 16
    lr: float = 1e-3  # projector
    llm_lr: float = 1e-4  # unfrozen LLM layers
    unfreeze_last: int = 0
    lora_rank: int = 0  # LoRA adapters on the LLM, trained at llm_lr
    token_positions: bool = False  # learn an embedding per vision-token position
    # how the image joins the LLM (models/fusion.py): "prefix" (projected tokens before the
    # text), "cross-attention" (gated blocks, Flamingo) or "early" (patches, no vision tower)
    fusion: str = "prefix"
    cross_every: int = 4  # cross-attention: a block before every Nth decoder layer
    latents: int = 0  # cross-attention: Perceiver-resample each image to this many tokens
    patch_size: int = 8  # early: pixels per patch side
    image_size: int = 64  # early: images resized to this side; (side / patch)^2 tokens
    warmup_steps: int = 20
    distractor_rate: float = 0.0  # share of QA prompts with 1-2 other images after the target
    # QA prompts also show 0..tiles of the image's best tiles for the question (the count
    # drawn per prompt), picked from `index` as `ask --tiles` picks them
    tiles: int = 0
    index: Path | None = None
    precision: str = "auto"  # core/precision.py; bf16 autocast halves a step on native-bf16 CPUs
    threads: int | None = None  # torch threads; 1 is far faster on a CPU shared with others
    device: str = "cpu"  # "cuda": the LLM and projector train on a GPU
    init_from: Path | None = None  # continue from this checkpoint's weights (same models)
    seed: int = 0

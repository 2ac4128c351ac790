"""Train the projector between a CLIP vision tower and a causal LM.

Stage 1 (captions) aligns image tokens with the LLM on (image, caption) pairs; stage 2 (QA)
tunes on (image, question, answer) triples. The vision tower is frozen and its tokens are
computed once and cached, so it never runs inside the loop. The LLM is frozen unless
`unfreeze_last` > 0; either way gradients flow through it to the projector. The loss covers
the answer (or caption) tokens only.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from mmindex.core.progress import Progress
from mmindex.data.questions import read_questions
from mmindex.errors import UserInputError
from mmindex.models.registry import check_device
from mmindex.models.vlm import CAPTION_PROMPT
from mmindex.train.config import TrainProjectorConfig

EARLY_VISION = "pixels"  # early fusion's "vision model": none, the images' own pixels
CURVE_STEPS = 20  # steps averaged into one point of the loss curve (2400 steps: 120 points)
LOSS_PLOT = "loss.png"  # written beside the checkpoint




@dataclass(frozen=True)
class Sample:
    image: int  # row of the feature cache
    prompt: str
    answer: str
    tiles: tuple[int, ...] = ()  # rows of the image's best tiles for the prompt, best first


@dataclass
class StageReport:
    name: str
    steps: int = 0
    seconds: float = 0.0
    first_loss: float = float("nan")
    last_loss: float = float("nan")  # mean of the last 20 steps
    interrupted: bool = False
    loss_curve: list[float] = field(default_factory=list)  # mean of each CURVE_STEPS steps


@dataclass
class TrainReport:
    out_dir: str
    n_images: int
    feature_seconds: float
    stages: list[StageReport] = field(default_factory=list)
    # The stages behind the --init-from checkpoint (its own ancestors' too), oldest first:
    # a projector trained in several continued runs keeps its whole recipe and loss curve.
    earlier_stages: list[StageReport] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)




def train_projector(config: TrainProjectorConfig, progress: Progress | None = None) -> TrainReport:
    from mmindex.models.llm import load_llm
    from mmindex.models.registry import load_encoder
    from mmindex.models.vlm import Vlm, save_vlm

    _check(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    encoder, llm = load_encoder(config.vision_model), load_llm(config.llm)
    captions, questions, paths = read_samples(config.captions, config.questions)
    if config.tiles:
        questions, paths = with_best_tiles(questions, paths, config.index, config.tiles)
    started = time.perf_counter()
    features = cache_inputs(encoder, paths, config)  # (N, T, C) tokens, or (N, 3, S, S) pixels
    report = TrainReport(str(config.out_dir), len(paths), time.perf_counter() - started)
    vlm = Vlm(vlm_config(config, encoder, llm, features), llm)
    if config.init_from is not None:
        _load_weights(vlm, config.init_from, encoder)
        report.earlier_stages = stages_behind(config.init_from)
    vlm.to(config.device)  # the vision tokens stay cached on the CPU; batches move
    for name, samples, steps, minutes in (("captions", captions, config.caption_steps,
                                           config.caption_minutes),
                                          ("qa", questions, config.qa_steps, config.qa_minutes)):
        if samples and steps > 0 and not any(s.interrupted for s in report.stages):
            report.stages.append(run_stage(vlm, features, samples, name, steps, minutes,
                                           config, progress))
    save_vlm(vlm.eval(), config.out_dir, extra={"train": report.to_dict()})
    plot_losses(report.earlier_stages + report.stages, Path(config.out_dir) / LOSS_PLOT)
    return report


def stages_behind(checkpoint: Path) -> list[StageReport]:
    """Every training stage that made a checkpoint, oldest first ([] when it has no record)."""
    from mmindex.models.vlm import CONFIG_FILE

    try:
        train = json.loads((Path(checkpoint) / CONFIG_FILE).read_text()).get("train", {})
    except (OSError, ValueError):
        return []
    return [StageReport(**stage) for stage in
            train.get("earlier_stages", []) + train.get("stages", [])]


def plot_losses(stages: list[StageReport], path: Path) -> Path | None:
    """Each stage's training loss against the step count of the whole lineage, one line per
    stage, so the runs of a continued training follow one another."""
    from mmindex.core import plots

    if not any(s.loss_curve for s in stages):
        return None
    figure, axes = plots.figure()
    for stage, steps in zip(stages, curve_steps(stages)):
        axes.plot(steps, stage.loss_curve, label=f"{stage.name} ({stage.steps} steps)")
    axes.set(xlabel="step", ylabel=f"loss (mean of {CURVE_STEPS} steps)", yscale="log",
             title="train-projector")
    axes.legend(loc="best", fontsize="small")
    return plots.save(figure, path)


def curve_steps(stages: list[StageReport]) -> list[list[int]]:
    """The step (counted over all the stages before it) of each point of each loss curve."""
    done, steps = 0, []
    for stage in stages:
        steps.append([done + min((i + 1) * CURVE_STEPS, stage.steps)
                      for i in range(len(stage.loss_curve))])
        done += stage.steps
    return steps


def _load_weights(vlm, checkpoint: Path, encoder) -> None:
    """Start from a checkpoint trained against the same vision model and LLM."""
    from safetensors.torch import load_file

    from mmindex.models.vlm import (
        WEIGHTS_FILE,
        check_matches,
        load_trained_state,
        read_vlm_config,
    )

    check_matches(read_vlm_config(checkpoint), encoder.info.fingerprint,
                  _LlmId(vlm.config.llm, vlm.config.llm_fingerprint))
    load_trained_state(vlm, load_file(str(Path(checkpoint) / WEIGHTS_FILE)), checkpoint)


@dataclass(frozen=True)
class _LlmId:  # what check_matches reads of an LLM
    name: str
    fingerprint: str


def _check(config: TrainProjectorConfig) -> None:
    if config.captions is None and config.questions is None:
        raise UserInputError("give --captions (stage 1) and/or --questions (stage 2)")
    if config.tiles < 0 or (config.tiles and config.index is None):
        raise UserInputError(f"--tiles {config.tiles} needs a number of tiles of 0 or more "
                             "and --index, an index of the questions' images ingested with "
                             "--tiles (the tiles shown are the ones `ask --tiles` would pick)")
    if config.tiles and config.distractor_rate:
        raise UserInputError("--tiles and --distractor-rate do not combine: ask shows an "
                             "image's tiles only when it asks about that image alone")
    if config.batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, not {config.batch_size}")
    check_device(config.device)


def vlm_config(config: TrainProjectorConfig, encoder, llm, features: torch.Tensor):
    from mmindex.models.vlm import VlmConfig

    early = config.fusion == "early"  # no vision tower: the model reads pixels
    return VlmConfig(projector=config.projector,
                     vision_dim=3 if early else int(features.shape[-1]),
                     llm_dim=llm.hidden_size,
                     image_tokens=(config.image_size // config.patch_size) ** 2 if early
                     else int(features.shape[1]),
                     vision_model=EARLY_VISION if early else encoder.info.spec,
                     vision_fingerprint=EARLY_VISION if early else encoder.info.fingerprint,
                     llm=llm.name, llm_fingerprint=llm.fingerprint,
                     unfrozen_layers=config.unfreeze_last, vision_layer=config.vision_layer,
                     lora_rank=config.lora_rank, token_positions=config.token_positions,
                     fusion=config.fusion, cross_every=config.cross_every,
                     latents=config.latents, patch_size=config.patch_size,
                     image_size=config.image_size)


# ---------------------------------------------------------------- data


def read_samples(captions: Path | None, questions: Path | None):
    """Stage-1 and stage-2 samples, and the image paths their `image` fields index."""
    paths: dict[Path, int] = {}

    def row_of(path: Path) -> int:
        return paths.setdefault(path, len(paths))

    caption_samples = []
    if captions is not None:
        from mmindex.data.pairs import load_pairs

        caption_samples = [Sample(row_of(p.image), CAPTION_PROMPT, p.caption)
                           for p in load_pairs(captions)]
    question_samples = [Sample(row_of(image), q, a) for image, q, a, _ in
                        read_questions(questions)] if questions is not None else []
    return caption_samples, question_samples, list(paths)



def with_best_tiles(samples: list[Sample], paths: list, index_dir: Path, n: int):
    """QA samples with the rows of their image's n best tiles for their question (as `ask
    --tiles n` picks them from the index), and the paths with those tiles added as Views."""
    from mmindex.data.tiles import View
    from mmindex.search.searcher import open_index
    from mmindex.search.tiles import question_tiles

    boxes = question_tiles(open_index(index_dir),
                           [(paths[s.image], s.prompt) for s in samples], n)
    rows = {path: i for i, path in enumerate(paths)}
    shown = [replace(s, tiles=tuple(rows.setdefault(View(paths[s.image], box), len(rows))
                                    for box in mine))
             for s, mine in zip(samples, boxes)]
    return shown, list(rows)


def cache_inputs(encoder, paths: list[Path], config: TrainProjectorConfig) -> torch.Tensor:
    """What the model reads of every image, once, in bf16 to halve the cache: vision tokens
    (10k x 16 x 1024: 330 MB), or for early fusion the pixels (10k x 3 x 64 x 64: 250 MB)."""
    from mmindex.models.vlm import early_pixels, image_features

    if config.fusion == "early":
        return early_pixels(paths, config.image_size).to(torch.bfloat16)  # (N, 3, S, S)
    return image_features(encoder, paths, config.image_tokens,
                          config.vision_layer).to(torch.bfloat16)  # (N, T, C)


# ---------------------------------------------------------------- the loop


def run_stage(vlm, features, samples: list[Sample], name: str, steps: int,
              minutes: float | None, config: TrainProjectorConfig,
              progress: Progress | None) -> StageReport:
    optimizer = _optimizer(vlm, config)
    schedule = _schedule(optimizer, config.warmup_steps, steps)
    rng = random.Random(config.seed)
    report, losses = StageReport(name), []
    deadline = time.perf_counter() + minutes * 60 if minutes is not None else math.inf
    started = time.perf_counter()
    vlm.train()
    try:  # Ctrl-C ends the stage early; what was trained so far is kept and saved
        for step in range(steps):
            picked = rng.sample(samples, min(config.batch_size, len(samples)))
            images = [[s.image] + _some_tiles(rng, s) +
                      _distractors(rng, s.image, len(features), config) for s in picked]
            losses.append(train_step(vlm, features, picked, images, optimizer, config.precision))
            schedule.step()
            if progress:
                progress(name, step + 1, steps, loss=losses[-1])
            if time.perf_counter() > deadline:
                break
    except KeyboardInterrupt:
        report.interrupted = True
    vlm.eval()
    if not losses:
        return report
    report.steps, report.seconds = len(losses), time.perf_counter() - started
    report.first_loss, report.last_loss = losses[0], sum(losses[-20:]) / len(losses[-20:])
    report.loss_curve = [sum(w) / len(w) for w in
                         (losses[i:i + CURVE_STEPS] for i in range(0, len(losses), CURVE_STEPS))]
    return report


def _some_tiles(rng: random.Random, sample: Sample) -> list[int]:
    """The sample's best 0..N tiles, the count drawn uniformly: one projector then answers
    at every budget `ask --tiles` may be given, the whole image alone included."""
    return list(sample.tiles[:rng.randint(0, len(sample.tiles))]) if sample.tiles else []


def _distractors(rng: random.Random, target: int, n_images: int,
                 config: TrainProjectorConfig) -> list[int]:
    """Other images after the target, as `ask` shows the top-k hits with the best first:
    the model learns to answer from [1] and not to mix in the rest."""
    if n_images < 3 or rng.random() >= config.distractor_rate:
        return []
    return [i for i in rng.sample(range(n_images), 3) if i != target][: rng.randint(1, 2)]


def train_step(vlm, features, batch_samples: list[Sample], images: list[list[int]],
               optimizer, precision: str = "fp32") -> float:
    from mmindex.core.precision import autocast
    from mmindex.models.vlm import build_example, collate

    tokenizer = vlm.tokenizer
    examples = [build_example(tokenizer, s.prompt, imgs, vlm.slots, s.answer)
                for s, imgs in zip(batch_samples, images)]
    batch = collate(examples, tokenizer.pad_token_id)
    with autocast(precision, vlm.device):
        loss = vlm.loss(batch, features[batch.images])  # features: (M, T, C)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _optimizer(vlm, config: TrainProjectorConfig):
    # the image side (projector, patch embedding) and any cross-attention blocks learn from
    # scratch at lr; the LLM's own trained parameters (last layers, LoRA) at llm_lr
    fresh = list(vlm.projector.parameters())
    if vlm.cross is not None:
        fresh += list(vlm.cross.parameters())
    groups = [{"params": fresh, "lr": config.lr}]
    llm_params = [p for p in vlm.llm.parameters() if p.requires_grad]
    if llm_params:
        groups.append({"params": llm_params, "lr": config.llm_lr})
    return torch.optim.AdamW(groups, weight_decay=0.0)


def _schedule(optimizer, warmup: int, total: int):
    """Linear warm-up, then cosine decay to a tenth: stable for a fresh projector."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

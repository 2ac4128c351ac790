"""Retrieval evaluation: recall@k and median rank, image→text and text→image.

`retrieval_metrics` is the pure maths over embeddings; `evaluate_retrieval` encodes a set
of pairs with any encoder and calls it. Fine-tuning (before and after training), the
benchmarks and the CLI all call `evaluate_retrieval`, so the figures are comparable.

Two kinds of hit are scored. Strict: the retrieved item is the ground-truth one. Matched:
the retrieved image holds exactly the objects described (equal attribute keys) — in the
shapes domain single-object descriptions repeat within a split, which caps strict recall@1
below what a perfect model can reach.

When the pairs carry a style (make-shapes --style), each style is also scored alone, its
images ranked among their own style only, as if it were its own split; `transfer_table`
puts several models' per-style recall beside the styles each was trained on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmindex.data.pairs import Pairs, SkippedRow, load_pairs
from mmindex.errors import ModelError, UserInputError
from mmindex.models.encoder import Encoder, l2_normalise

QUERY_CHUNK = 1024  # queries scored at once: bounds the (chunk, N) score matrix in memory


@dataclass(frozen=True)
class DirectionScores:
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    median_rank: float  # 1 is best
    n_queries: int


@dataclass(frozen=True)
class RetrievalScores:
    image_to_text: DirectionScores
    text_to_image: DirectionScores


@dataclass(frozen=True)
class RetrievalMetrics:
    strict: RetrievalScores
    matched: RetrievalScores | None  # None when no image carries attributes


@dataclass(frozen=True)
class RetrievalReport:
    model: str
    pairs: str
    n_images: int
    n_texts: int
    skipped: tuple[SkippedRow, ...]  # rows the loader or the decoder left out, with reasons
    metrics: RetrievalMetrics
    seconds: float
    by_style: dict[str, RetrievalMetrics] = field(default_factory=dict)  # empty: no styles

    def to_dict(self) -> dict:
        return asdict(self) | {"n_skipped": len(self.skipped)}


# ---------------------------------------------------------------- the metric


def retrieval_metrics(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_image: np.ndarray,
    image_keys: Sequence[Hashable | None] | None = None,
) -> RetrievalMetrics:
    """Scores of both directions, strict and (given `image_keys`) attribute-matched.

    image_embeddings (N_img, D), text_embeddings (N_txt, D), text_image (N_txt,) the index of
    each text's image. image_keys: per image, a key equal for images that hold the same
    objects, or None (that image then matches only itself). Images without any text are not
    image→text queries.
    """
    images = _checked_embeddings(image_embeddings, "image")  # (N_img, D)
    texts = _checked_embeddings(text_embeddings, "text")  # (N_txt, D)
    text_image = np.asarray(text_image, dtype=np.int64)  # (N_txt,)
    _check_alignment(images, texts, text_image)
    strict = _scores(images, texts, text_image, np.arange(len(images)))
    if image_keys is None or all(key is None for key in image_keys):
        return RetrievalMetrics(strict, None)
    if len(image_keys) != len(images):
        raise UserInputError(f"{len(image_keys)} image keys for {len(images)} images")
    return RetrievalMetrics(strict, _scores(images, texts, text_image, _key_ids(image_keys)))


def _scores(images, texts, text_image, image_group) -> RetrievalScores:
    """Ranks where a hit is any candidate in the query's group (one image, or equal keys)."""
    has_text = np.zeros(len(images), dtype=bool)
    has_text[text_image] = True
    image_to_text = hit_ranks(
        images[has_text], texts, image_group[has_text], image_group[text_image]
    )
    text_to_image = hit_ranks(texts, images, image_group[text_image], image_group)
    return RetrievalScores(_summary(image_to_text), _summary(text_to_image))


def hit_ranks(
    queries: np.ndarray,
    candidates: np.ndarray,
    query_groups: np.ndarray,
    candidate_groups: np.ndarray,
) -> np.ndarray:
    """1-based rank of each query's best-scoring hit (a candidate of the same group).

    Ties count against the query: a non-hit scoring the same as the best hit ranks above it,
    so a collapsed encoder (every embedding equal) scores zero, not perfect.
    """
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), QUERY_CHUNK):
        stop = start + QUERY_CHUNK
        scores = queries[start:stop] @ candidates.T  # (B, N_cand)
        hits = query_groups[start:stop, None] == candidate_groups[None, :]  # (B, N_cand)
        best = np.where(hits, scores, -np.inf).max(axis=1)  # (B,)
        ranks[start:stop] = 1 + ((scores >= best[:, None]) & ~hits).sum(axis=1)
    return ranks


def _summary(ranks: np.ndarray) -> DirectionScores:
    return DirectionScores(
        recall_at_1=float(np.mean(ranks <= 1)),
        recall_at_5=float(np.mean(ranks <= 5)),
        recall_at_10=float(np.mean(ranks <= 10)),
        median_rank=float(np.median(ranks)),
        n_queries=len(ranks),
    )


def _key_ids(image_keys: Sequence[Hashable | None]) -> np.ndarray:
    """Equal keys -> equal ids; each None gets an id of its own."""
    ids: dict[Hashable, int] = {}
    out = np.empty(len(image_keys), dtype=np.int64)  # (N_img,)
    for i, key in enumerate(image_keys):
        out[i] = ids.setdefault(key if key is not None else ("<no key>", i), len(ids))
    return out


def _checked_embeddings(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise UserInputError(f"{what} embeddings must be a non-empty (N, D) array, got {x.shape}")
    if not np.isfinite(x).all():
        # NaN compares false with everything, which would rank every NaN query first.
        raise ModelError(f"the encoder returned non-finite {what} embeddings (NaN or inf)")
    return l2_normalise(x)  # cosine similarity even if an encoder forgot to normalise


def _check_alignment(images: np.ndarray, texts: np.ndarray, text_image: np.ndarray) -> None:
    if images.shape[1] != texts.shape[1]:
        raise ModelError(f"image dim {images.shape[1]} differs from text dim {texts.shape[1]}")
    if text_image.shape != (len(texts),):
        raise UserInputError(f"text_image has shape {text_image.shape}, expected ({len(texts)},)")
    if text_image.min() < 0 or text_image.max() >= len(images):
        raise UserInputError(f"text_image holds indices outside 0..{len(images) - 1}")


# ---------------------------------------------------------------- encoding a set of pairs


@dataclass(frozen=True)
class _ImageCaptions:
    path: Path
    captions: tuple[str, ...]
    key: Hashable | None
    style: str | None = None


def evaluate_retrieval(
    encoder: Encoder, pairs: Pairs | str | Path, batch_size: int = 64
) -> RetrievalReport:
    """Encode every image and caption of `pairs` and score retrieval both ways."""
    started = time.perf_counter()
    pairs = pairs if isinstance(pairs, Pairs) else load_pairs(pairs)
    groups = _group_by_image(pairs)
    image_embeddings, kept, undecodable = _encode_images(encoder, groups, batch_size)
    captions = [caption for group in kept for caption in group.captions]
    text_image = np.repeat(np.arange(len(kept)), [len(group.captions) for group in kept])
    text_embeddings = _encode_texts(encoder, captions, batch_size)  # (N_txt, D)
    keys = [group.key for group in kept]
    return RetrievalReport(
        model=encoder.info.spec,
        pairs=str(pairs.source),
        n_images=len(kept),
        n_texts=len(captions),
        skipped=pairs.skipped + tuple(undecodable),
        metrics=retrieval_metrics(image_embeddings, text_embeddings, text_image, keys),
        seconds=round(time.perf_counter() - started, 3),
        by_style=metrics_by_style(
            image_embeddings, text_embeddings, text_image, keys, [g.style for g in kept]
        ),
    )


def metrics_by_style(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_image: np.ndarray,
    image_keys: Sequence[Hashable | None],
    image_styles: Sequence[str | None],
) -> dict[str, RetrievalMetrics]:
    """Each style's images and their texts scored alone (images of no style are left out):
    a style's figures are what a split of that style alone would give."""
    styles = np.array([style or "" for style in image_styles])  # (N_img,)
    result = {}
    for style in sorted(set(styles) - {""}):
        images = np.flatnonzero(styles == style)  # (n,) indices into all images
        new_index = np.full(len(styles), -1)
        new_index[images] = np.arange(len(images))
        texts = np.flatnonzero(new_index[text_image] >= 0)  # texts of this style's images
        result[str(style)] = retrieval_metrics(
            image_embeddings[images],
            text_embeddings[texts],
            new_index[text_image[texts]],
            [image_keys[i] for i in images],
        )
    return result


def attribute_key(attributes: str | None) -> Hashable | None:
    """A canonical key of an attributes JSON: the same objects in any order give one key.

    Each object becomes its JSON with sorted fields; the key is the sorted tuple of those,
    so it works for any attribute schema, the shapes one included.
    """
    if not attributes:
        return None
    try:
        value = json.loads(attributes)
    except json.JSONDecodeError:
        return None  # unreadable attributes: score this image strictly only
    items = value if isinstance(value, list) else [value]
    return tuple(sorted(json.dumps(item, sort_keys=True) for item in items))


def _group_by_image(pairs: Pairs) -> list[_ImageCaptions]:
    """One entry per distinct image, in first-seen order, with all of its captions."""
    captions: dict[Path, list[str]] = {}
    attributes: dict[Path, str] = {}
    styles: dict[Path, str] = {}
    for pair in pairs:
        captions.setdefault(pair.image, []).append(pair.caption)
        if pair.attributes:
            attributes.setdefault(pair.image, pair.attributes)
        if pair.style:
            styles.setdefault(pair.image, pair.style)
    return [
        _ImageCaptions(path, tuple(texts), attribute_key(attributes.get(path)), styles.get(path))
        for path, texts in captions.items()
    ]


def _encode_images(encoder: Encoder, groups: list[_ImageCaptions], batch_size: int):
    """Embeddings (N_kept, D) of the images that decode, those groups, and the failures."""
    import torch

    from mmindex.data.batches import load_pixels

    embeddings, kept, failed = [], [], []
    for batch in _batches(groups, batch_size):
        loaded = load_pixels([g.path for g in batch], encoder.preprocess, encoder.info.image_size)
        for group, result in zip(batch, loaded.results):
            if result.ok:
                kept.append(group)
            else:
                failed.append(SkippedRow(str(group.path), f"cannot decode: {result.reason}"))
        if loaded.pixels is not None:
            with torch.no_grad():
                embeddings.append(np.asarray(encoder.encode_images(loaded.pixels)))
    if not kept:
        raise UserInputError(f"none of the {len(groups)} images could be decoded")
    return np.concatenate(embeddings).astype(np.float32), kept, failed  # (N_kept, D)


def _encode_texts(encoder: Encoder, captions: list[str], batch_size: int) -> np.ndarray:
    import torch

    with torch.no_grad():
        parts = [np.asarray(encoder.encode_texts(b)) for b in _batches(captions, batch_size)]
    return np.concatenate(parts).astype(np.float32)  # (N_txt, D)


def _batches(items: list, size: int) -> Iterator[list]:
    if size < 1:
        raise UserInputError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------- transfer between styles


@dataclass(frozen=True)
class TransferRow:
    model: str
    trained_styles: tuple[str, ...] | None  # None: the checkpoint does not record them
    by_style: dict[str, RetrievalMetrics]


def trained_styles(spec: str) -> tuple[str, ...] | None:
    """The styles an mmindex checkpoint says its weights were trained on (finetune records
    them); None for any model that does not say."""
    from mmindex.models.clip import CHECKPOINT_CONFIG

    path = Path(spec).expanduser() / CHECKPOINT_CONFIG
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text()).get("finetune") or {}
        styles = record.get("trained_styles")
    except (json.JSONDecodeError, AttributeError):
        return None
    return tuple(styles) if isinstance(styles, list) else None


def transfer_table(rows: Sequence[TransferRow]) -> str:
    """Markdown: one row per model (with what it was trained on), one column per test style;
    each cell matched / strict text→image recall@1, marked * where the model never trained
    on that style."""
    styles = sorted({style for row in rows for style in row.by_style})
    if not styles:
        raise UserInputError(
            "the pairs carry no style column, so there is no transfer to show; "
            "make them with `mmindex make-shapes --style ...`"
        )
    lines = [
        "| model | trained on | " + " | ".join(styles) + " |",
        "|---|---|" + "---|" * len(styles),
    ]
    for row in rows:
        trained = ", ".join(row.trained_styles) if row.trained_styles else "not recorded"
        cells = [_transfer_cell(row, style) for style in styles]
        lines.append(f"| {row.model} | {trained} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("cells: matched / strict text→image R@1; * a style the model never trained on")
    return "\n".join(lines) + "\n"


def _transfer_cell(row: TransferRow, style: str) -> str:
    metrics = row.by_style.get(style)
    if metrics is None:
        return "-"
    strict = metrics.strict.text_to_image.recall_at_1
    matched = metrics.matched.text_to_image.recall_at_1 if metrics.matched else float("nan")
    unseen = row.trained_styles is not None and style not in row.trained_styles
    return f"{matched:.3f} / {strict:.3f}" + (" *" if unseen else "")

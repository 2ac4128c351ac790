"""Vlm: a projector in front of a causal LM, LLaVA-style.

A prompt holds one `<image>` placeholder per image, each after its citation tag (`[1] <image>`).
Tokenizing replaces each placeholder by T slots (T = image tokens per image) and records them
in one boolean mask; embedding the text and scattering the projected image tokens through
that mask gives the LLM's `inputs_embeds`. No per-example splice loop, no special token added
to the tokenizer: the slots hold the pad id, whose embedding is overwritten.

A checkpoint is `config.json` (this VlmConfig plus training notes) and `model.safetensors`
(the projector, and any LLM layers that were unfrozen).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from mmindex.errors import ModelError, ModelMismatchError, UserInputError
from mmindex.models.fusion import (
    FUSIONS,
    PIXEL_MEAN,
    CrossAttentionLayers,
    PatchEmbed,
    Resampler,
    media_index,
)
from mmindex.models.llm import LoadedLlm
from mmindex.models.projector import ProjectorConfig, build_projector

IMAGE_PLACEHOLDER = "<image>"
IGNORE_INDEX = -100  # labels the loss skips (prompt, image slots, padding)
CHECKPOINT_FORMAT = "mmindex-vlm-checkpoint/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SYSTEM_PROMPT = "Answer briefly."  # short: every token is paid for in every step
CAPTION_PROMPT = "Describe the image."  # stage 1 trains on it; `caption` asks it


class PromptError(UserInputError):
    """A prompt's `<image>` placeholders do not match the images given with it."""


@dataclass(frozen=True)
class VlmConfig:
    projector: str  # "linear" | "mlp2x_gelu"
    vision_dim: int  # C
    llm_dim: int  # H
    image_tokens: int  # T: tokens per image after pooling
    vision_model: str  # the CLIP spec the features come from
    vision_fingerprint: str
    llm: str  # the LLM spec (path) the projector was trained against
    llm_fingerprint: str
    unfrozen_layers: int = 0  # last LLM layers trained with the projector (saved with it)
    vision_layer: int = -1  # the vision tower's block the tokens come from (-1: the last)
    lora_rank: int = 0  # LoRA adapters of this rank on the LLM's linear layers (0: none)
    token_positions: bool = False  # a learned embedding per token position (projector.py)
    fusion: str = "prefix"  # "prefix" | "cross-attention" | "early" (models/fusion.py)
    cross_every: int = 4  # cross-attention: a gated block before every Nth decoder layer
    latents: int = 0  # cross-attention: resample each image to this many tokens (0: keep T)
    patch_size: int = 8  # early: pixels per patch side
    image_size: int = 64  # early: the side images are resized to; (side/patch)^2 tokens
    heads: int = 4  # cross-attention and the resampler


@dataclass
class Example:
    """One tokenized prompt (and answer, for training); `images` index a feature table."""

    input_ids: list[int]
    image_mask: list[bool]
    labels: list[int] | None
    images: list[int] = field(default_factory=list)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long, 0 on padding
    image_mask: torch.Tensor  # (B, L) bool, True on image slots
    labels: torch.Tensor | None  # (B, L) long, IGNORE_INDEX where no loss
    images: list[int]  # feature rows in the order their slots appear, batch-major

    def to(self, device: torch.device) -> Batch:
        labels = None if self.labels is None else self.labels.to(device)
        return Batch(self.input_ids.to(device), self.attention_mask.to(device),
                     self.image_mask.to(device), labels, self.images)


# ---------------------------------------------------------------- prompts


def image_prompt(question: str, n_images: int) -> str:
    """The user turn: each image introduced by its citation tag, then the question."""
    tags = "".join(f"[{i}] {IMAGE_PLACEHOLDER}\n" for i in range(1, n_images + 1))
    return f"{tags}{question}"


def chat_text(tokenizer, user_text: str) -> str:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, text: str, n_images: int, image_tokens: int) -> tuple[list, list]:
    """Token ids and image mask of a text with placeholders; each placeholder becomes
    `image_tokens` slots. A placeholder count that differs from n_images is an error."""
    pieces = text.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 != n_images:
        raise PromptError(f"the prompt has {len(pieces) - 1} {IMAGE_PLACEHOLDER} placeholders "
                          f"but {n_images} images were given")
    ids, mask = [], []
    for i, piece in enumerate(pieces):
        piece_ids = tokenizer(piece, add_special_tokens=False).input_ids if piece else []
        ids += piece_ids
        mask += [False] * len(piece_ids)
        if i < n_images:
            ids += [tokenizer.pad_token_id] * image_tokens
            mask += [True] * image_tokens
    return ids, mask


def build_example(tokenizer, question: str, images: Sequence[int], image_tokens: int,
                  answer: str | None = None) -> Example:
    """A chat-templated example; with an answer, labels cover the answer tokens only."""
    text = chat_text(tokenizer, image_prompt(question, len(images)))
    ids, mask = encode_prompt(tokenizer, text, len(images), image_tokens)
    if answer is None:
        return Example(ids, mask, None, list(images))
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    labels = [IGNORE_INDEX] * len(ids) + answer_ids  # the loss sees the answer only
    return Example(ids + answer_ids, mask + [False] * len(answer_ids), labels, list(images))


def collate(examples: Sequence[Example], pad_id: int, left_pad: bool = False) -> Batch:
    """Pad to one length: right for training, left for generation (new tokens follow on)."""
    length = max(len(e.input_ids) for e in examples)
    rows = [_padded(e, length, pad_id, left_pad) for e in examples]
    ids, attention, image_mask, labels = (torch.tensor([r[i] for r in rows]) for i in range(4))
    has_labels = examples[0].labels is not None
    images = [image for e in examples for image in e.images]
    return Batch(ids, attention, image_mask.bool(), labels if has_labels else None, images)


def _padded(e: Example, length: int, pad_id: int, left: bool):
    n = length - len(e.input_ids)
    labels = e.labels if e.labels is not None else [IGNORE_INDEX] * len(e.input_ids)
    parts = (e.input_ids, [1] * len(e.input_ids), e.image_mask, labels)
    fills = (pad_id, 0, False, IGNORE_INDEX)
    return [[f] * n + list(p) if left else list(p) + [f] * n for p, f in zip(parts, fills)]


# ---------------------------------------------------------------- the model


class Vlm(nn.Module):
    def __init__(self, config: VlmConfig, llm: LoadedLlm):
        super().__init__()
        if llm.hidden_size != config.llm_dim:
            raise ModelMismatchError(f"projector outputs {config.llm_dim} wide embeddings but "
                                     f"{llm.name} takes {llm.hidden_size}")
        if config.fusion not in FUSIONS:
            raise UserInputError(f"--fusion must be one of {', '.join(FUSIONS)}, "
                                 f"not {config.fusion!r}")
        self.config = config
        self.projector = _image_side(config)  # whatever turns an image into H-wide tokens
        self.llm = llm.model
        self.tokenizer = llm.tokenizer
        add_lora(self.llm, config.lora_rank)  # first: peft freezes all but its adapters
        unfreeze_last_layers(self.llm, config.unfrozen_layers)
        self.cross = CrossAttentionLayers(
            self.llm.model.layers, config.cross_every, config.llm_dim, config.heads) \
            if config.fusion == "cross-attention" else None

    @property
    def slots(self) -> int:
        """Context tokens each image takes: its tokens (prefix, early), or one marker that
        the text after it attends from (cross-attention)."""
        if self.config.fusion == "cross-attention":
            return 1
        if self.config.fusion == "early":
            return self.projector.patches
        return self.config.image_tokens

    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    def embed(self, batch: Batch, features: torch.Tensor) -> torch.Tensor:
        """Text embeddings with each image's tokens in its slots (prefix, early), or with
        the images set for the cross-attention blocks. features: the M images of the batch
        in slot order, on any device: (M, T, C) vision tokens, or (M, 3, S, S) pixels."""
        text = self.llm.get_input_embeddings()(batch.input_ids)  # (B, L, H)
        slots, images = int(batch.image_mask.sum()), features.shape[0]
        if slots != images * self.slots:
            raise PromptError(f"the batch has {slots} image slots but {images} images of "
                              f"{self.slots} slots each were given")
        image = self.projector(features.to(text.device, text.dtype)).to(text.dtype) \
            if images else None  # (M, T, H); autocast
        if self.cross is not None:
            per_row = batch.image_mask.sum(dim=1)  # one marker per image
            first = per_row.cumsum(0) - per_row  # (B,) the row's first image in the batch
            self.cross.context(image, media_index(batch.image_mask, first))
            return text
        if image is None:
            return text
        # One mask: slots are filled in (batch, position) order, which is the images' order.
        return text.masked_scatter(batch.image_mask.unsqueeze(-1), image.reshape(-1, text.shape[-1]))

    def image_features(self, encoder, paths: Sequence[Path]) -> torch.Tensor:
        """What this model reads of image files, as it was trained: (N, T, C) tokens from the
        same block of the vision tower, pooled to the same count; or, for early fusion,
        (N, 3, S, S) pixels (the encoder is then not used)."""
        if self.config.fusion == "early":
            return early_pixels(paths, self.config.image_size)
        return image_features(encoder, paths, self.config.image_tokens,
                              self.config.vision_layer)

    def loss(self, batch: Batch, features: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        embeds = self.embed(batch, features)  # (B, L, H)
        try:
            out = self.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                           labels=batch.labels)
        finally:
            self._forget_images()
        return out.loss

    def _forget_images(self) -> None:
        if self.cross is not None:
            self.cross.context(None, None)

    @torch.inference_mode()
    def generate(self, batch: Batch, features: torch.Tensor, max_new_tokens: int = 32,
                 on_text: Callable[[str], None] | None = None) -> list[str]:
        """Greedy answers of a left-padded batch. `on_text` (batch of one only) receives the
        answer's text piece by piece as it is generated, for streaming."""
        if on_text is not None and batch.input_ids.shape[0] != 1:
            raise ValueError("streaming needs a batch of one prompt")
        batch = batch.to(self.device)
        embeds = self.embed(batch, features)  # (B, L, H)
        try:
            new = self.llm.generate(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                                    max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=self.tokenizer.pad_token_id,
                                    eos_token_id=self.tokenizer.eos_token_id,
                                    streamer=_text_streamer(self.tokenizer, on_text))  # (B, new)
        finally:
            self._forget_images()
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: the projector and the unfrozen LLM parameters."""
        state = {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        if self.cross is not None:
            state |= {f"cross.{k}": v for k, v in self.cross.state_dict().items()}
        state |= {f"llm.{n}": p for n, p in self.llm.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _text_streamer(tokenizer, on_text: Callable[[str], None] | None):
    """transformers' TextStreamer decodes whole words as tokens arrive; this one hands them
    to `on_text` instead of printing them. Given only inputs_embeds, generate never shows it
    the prompt's ids, so there is no prompt to skip."""
    if on_text is None:
        return None
    from transformers import TextStreamer

    class _Forward(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return _Forward(tokenizer, skip_special_tokens=True)



def add_lora(llm, rank: int) -> None:
    """LoRA adapters (peft) on every linear layer of the decoder, in place, with alpha = 2 x
    rank (LLaVA's setting); only the adapters train. The output head keeps its weights, tied
    to the input embeddings in small models. The adapters are named under the layers they
    adapt, so a checkpoint saves and loads them like unfrozen layers."""
    if rank <= 0:
        return
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ModelError("LoRA needs peft: pip install 'mmindex[ask]'") from None
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                        target_modules="all-linear")
    inject_adapter_in_model(config, llm)


def unfreeze_last_layers(llm, n: int) -> None:
    """Let the last n decoder layers (and the final norm) train; embeddings stay frozen, as
    they are tied to the output head in small models."""
    if n <= 0:
        return
    layers = llm.model.layers
    if n > len(layers):
        raise UserInputError(f"cannot unfreeze {n} layers: the LLM has {len(layers)}")
    for module in list(layers[-n:]) + [llm.model.norm]:
        for parameter in module.parameters():
            parameter.requires_grad_(True)


# ---------------------------------------------------------------- checkpoints


def save_vlm(vlm: Vlm, out_dir: Path, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    from mmindex.core.atomic import atomic_path, write_atomically

    out_dir = Path(out_dir)
    with atomic_path(out_dir / WEIGHTS_FILE) as weights:
        save_file(vlm.trainable_state(), str(weights))
    config = {"format": CHECKPOINT_FORMAT, **asdict(vlm.config), **(extra or {})}
    write_atomically(out_dir / CONFIG_FILE, json.dumps(config, indent=2))
    return out_dir


def read_vlm_config(path: Path) -> VlmConfig:
    path = Path(path)
    try:
        raw = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a projector checkpoint: {exc}") from None
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path / CONFIG_FILE} is not a projector checkpoint config")
    return VlmConfig(**{f.name: raw[f.name] for f in fields(VlmConfig) if f.name in raw})


def load_vlm(path: Path, llm: LoadedLlm, vision_fingerprint: str) -> Vlm:
    """Load a checkpoint against the vision model and LLM in hand; other weights than the
    ones it was trained against are refused, since the projection would be meaningless."""
    from safetensors.torch import load_file

    config = read_vlm_config(path)
    check_matches(config, vision_fingerprint, llm)
    vlm = Vlm(config, llm)
    load_trained_state(vlm, load_file(str(Path(path) / WEIGHTS_FILE)), path)
    return vlm.eval()


def load_trained_state(vlm: Vlm, state: dict[str, torch.Tensor], source: Path) -> None:
    """Put a checkpoint's weights in place: the projector, and the LLM parameters it trained
    (last layers, LoRA adapters). LLM weights the model has no place for are refused: they
    would be dropped silently, e.g. adapters into a model built without LoRA. So are weights
    of other shapes (another projector, vision width or LoRA rank)."""
    try:
        vlm.projector.load_state_dict(_under(state, "projector."))
        if vlm.cross is not None:
            vlm.cross.load_state_dict(_under(state, "cross."))
        unexpected = vlm.llm.load_state_dict(_under(state, "llm."), strict=False).unexpected_keys
    except RuntimeError as exc:  # torch's "size mismatch for ..." / "Missing key(s) ..."
        detail = str(exc).splitlines()[-1].strip()  # one of the mismatches
        raise ModelMismatchError(f"{source} does not fit this model (another projector, vision "
                                 f"width or LoRA rank): {detail}") from None
    if unexpected:
        raise ModelMismatchError(
            f"{source} holds LLM weights this model lacks ({unexpected[0]}, {len(unexpected)} "
            f"in all): its LoRA rank differs from this one's")


def check_matches(config: VlmConfig, vision_fingerprint: str, llm: LoadedLlm) -> None:
    if config.fusion != "early" and config.vision_fingerprint != vision_fingerprint:
        raise ModelMismatchError(
            f"the projector was trained on vision model '{config.vision_model}' (fingerprint "
            f"{config.vision_fingerprint}) but the index's model has fingerprint "
            f"{vision_fingerprint}; train a projector for this model")
    if config.llm_fingerprint != llm.fingerprint:
        raise ModelMismatchError(
            f"the projector was trained against LLM '{config.llm}' (fingerprint "
            f"{config.llm_fingerprint}) but '{llm.name}' has fingerprint {llm.fingerprint}")


def _under(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# ---------------------------------------------------------------- vision features


def image_features(encoder, paths: Sequence[Path], tokens: int | None, layer: int = -1,
                   batch_size: int = 64) -> torch.Tensor:
    """(N, T, C) vision tokens of image files from block `layer` of the vision tower, via the
    encoder's own preprocessing."""
    from mmindex.data.batches import load_pixels

    chunks = []
    for start in range(0, len(paths), batch_size):
        pixels = load_pixels(paths[start:start + batch_size], encoder.preprocess,
                             encoder.info.image_size).every_image()
        chunks.append(encoder.patch_tokens(pixels, tokens, layer))  # (b, T, C)
    return torch.cat(chunks)


def early_pixels(paths: Sequence[Path], side: int) -> torch.Tensor:
    """(N, 3, side, side) pixels in [-0.5, 0.5] for early fusion (no vision tower)."""
    import numpy as np

    from mmindex.data.batches import load_pixels

    def to_tensor(image) -> torch.Tensor:
        array = np.asarray(image.resize((side, side)), dtype=np.float32) / 255.0 - PIXEL_MEAN
        return torch.from_numpy(array).permute(2, 0, 1)  # (3, S, S)

    return load_pixels(list(paths), to_tensor, side).every_image()


def _image_side(config: VlmConfig) -> nn.Module:
    """The module that turns one image's input into H-wide tokens, by fusion."""
    if config.fusion == "early":
        return PatchEmbed(config.image_size, config.patch_size, config.llm_dim)
    projector = build_projector(
        ProjectorConfig(config.projector, config.vision_dim, config.llm_dim,
                        positions=config.image_tokens if config.token_positions else 0))
    if config.fusion == "cross-attention" and config.latents:
        return nn.Sequential(projector, Resampler(config.latents, config.llm_dim, config.heads))
    return projector

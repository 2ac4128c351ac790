"""HfVlm: a pretrained vision-language model from transformers, answering over images.

Any model `AutoModelForImageTextToText` + `AutoProcessor` load works: LLaVA-1.5 / LLaVA-NeXT
(`llava-hf/...`), SmolVLM / Idefics3 (`HuggingFaceTB/SmolVLM-256M-Instruct`), Qwen2-VL /
Qwen2.5-VL. It is named by a local directory (config.json, weights and processor files, as
`save_pretrained` writes them) or by a hub id. The prompt goes through the model's own chat
template and processor, so each family gets its own image tokens and resizing; the images
arrive as PIL images the caller already decoded (draft-decoded near `HfVlm.image_side`).

A hub id is read from the Hugging Face cache first; the hub is asked only when offline mode
is off and a quick probe reaches it, so a machine without the internet fails in seconds with
one line saying what to do, not after a minute of retries.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from mmindex.core.precision import resolve_precision
from mmindex.errors import ModelError
from mmindex.models.encoder import fingerprint_state_dict
from mmindex.models.llm import ASK_EXTRA_MISSING, ask_extra_installed, frozen, piece_streamer

HUB_HELP = ("download it once on a machine with the internet (it stays in the Hugging Face "
            "cache), or pass a local directory holding its config.json, weights and processor "
            "files")
# The side to decode images at, when the processor does not say: the common ViT input.
DEFAULT_IMAGE_SIDE = 448
# Decoding larger than this only feeds the processor pixels it throws away (or, for
# processors that bound pixel counts, thousands of image tokens a CPU cannot afford).
MAX_IMAGE_SIDE = 1536
_TRUE = ("1", "true", "yes", "on")  # how huggingface_hub reads its boolean variables


class HfVlm:
    """A frozen image-text-to-text model and its processor; `answer` is one greedy reply."""

    def __init__(self, model, processor, name: str, fingerprint: str):
        self.model, self.processor = model, processor
        self.name = name  # the spec it was loaded from
        self.fingerprint = fingerprint  # of the stored weights, before any cast

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_side(self) -> int:
        """Decode images with both sides at least this: the processor then only shrinks."""
        return _image_side(self.processor.image_processor)

    @torch.inference_mode()
    def answer(self, prompt: str, images: list[Image.Image], max_new_tokens: int,
               on_text: Callable[[str], None] | None = None) -> tuple[str, int]:
        """(the answer, stripped; how many tokens were generated). Zero images is a text-only
        prompt. `on_text` receives the answer's pieces as they are finalized; joined, they
        equal the returned text."""
        inputs = self._inputs(prompt, images)
        streamer = piece_streamer(self.processor.tokenizer, on_text) if on_text else None
        output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     streamer=streamer)
        new = output[0, inputs["input_ids"].shape[1]:]  # batch of one: no padding to skip
        text = self.processor.decode(new, skip_special_tokens=True).strip()
        return text, int(new.numel())

    def _inputs(self, prompt: str, images: list[Image.Image]):
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True)
        inputs = self.processor(text=text, images=list(images) or None, return_tensors="pt")
        return inputs.to(self.device, dtype=self.dtype)  # the cast touches float tensors only


def load_hf_vlm(spec: str, device: str = "cpu", precision: str = "auto") -> HfVlm:
    """The model a directory or hub id names, frozen, in the precision `precision` resolves
    to on `device` (fp32 or bf16: see mmindex.core.precision). Raises ModelError."""
    if not ask_extra_installed():
        raise ModelError(ASK_EXTRA_MISSING)
    from mmindex.models.registry import check_device

    check_device(device)
    spec = spec.strip()
    directory = _local_directory(spec)
    processor, model = _load_dir(directory) if directory else _load_hub(spec)
    fingerprint = fingerprint_state_dict(model.state_dict())  # before the cast: stable
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[resolve_precision(precision, device)]
    return HfVlm(frozen(model.to(device=device, dtype=dtype)), processor, spec, fingerprint)


def describe_hf_vlm(spec: str) -> str:
    """One line for a listing, from the config alone (no weights loaded, no network)."""
    if not ask_extra_installed():
        return f"{spec}: {ASK_EXTRA_MISSING}"
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(_local_directory(spec) or spec,
                                            local_files_only=True)
    except (OSError, ValueError, ModelError):
        return f"{spec}: not available here ({HUB_HELP})"
    architecture = ", ".join(getattr(config, "architectures", None) or [config.model_type])
    return f"{spec}: {architecture}"


def _local_directory(spec: str) -> Path | None:
    """The directory a spec names; None for a hub id. A path that is no directory is an
    error here, not a hub lookup that fails later with a stranger message."""
    if not spec:
        raise ModelError("empty vision-language model spec: pass a directory or a hub id")
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists() or spec.startswith(("/", "./", "../", "~")):
        raise ModelError(f"{spec} is not a directory: pass a vision-language model directory "
                         "(config.json, weights and processor files) or a hub id")
    return None


def _load_dir(directory: Path):
    """A directory must hold a vision-language model: anything else is named in the error."""
    try:
        return _from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{directory} is not a loadable vision-language model directory: "
                         f"{_first_line(exc)}") from None


def _load_hub(spec: str):
    """The cache first; the hub only when offline mode is off and it answers a quick probe."""
    try:
        return _from_pretrained(spec, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        cache_miss = exc
    if _offline():
        raise ModelError(f"'{spec}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                         f"{HUB_HELP}") from None
    from mmindex.models import clip  # its probe is the one the encoders use

    if not clip.hub_reachable():
        raise ModelError(f"'{spec}' is neither a local directory nor in the Hugging Face cache, and "
                         f"huggingface.co cannot be reached: {HUB_HELP}") from None
    try:
        return _from_pretrained(spec, local_files_only=False)
    except Exception as exc:  # noqa: BLE001  hub failures come as OSError, httpx or HF errors
        raise ModelError(f"cannot load '{spec}' from the hub ({_first_line(exc)}; in the cache: "
                         f"{_first_line(cache_miss)})") from None


def _from_pretrained(source, local_files_only: bool):
    """(processor, model) with the weights in their stored dtype. The processor goes first:
    it is cheap, and a text-only model is told apart by having no image processor."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmindex.models.llm import quiet_transformers

    with quiet_transformers():
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
        if getattr(processor, "image_processor", None) is None:
            raise ValueError("its processor has no image processor (a text-only model?)")
        model = AutoModelForImageTextToText.from_pretrained(source, dtype="auto",
                                                            local_files_only=local_files_only)
    return processor, model


def _offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _image_side(image_processor) -> int:
    """The largest side the processor resizes to, read from its size settings (and LLaVA-NeXT's
    grid of tile layouts), at most MAX_IMAGE_SIDE."""
    # Qwen2-VL's family (the processors that output a patch grid per image) bound pixel
    # counts: its shortest_edge 3136 is 56 x 56
    areas = "image_grid_thw" in getattr(image_processor, "model_input_names", ())
    sides = []
    for name in ("size", "crop_size", "max_image_size"):
        for key, value in _size_items(getattr(image_processor, name, None)):
            if isinstance(value, int):
                sides.append(math.isqrt(value) if areas or key.endswith("pixels") else value)
    for pinpoint in getattr(image_processor, "image_grid_pinpoints", None) or []:
        sides += list(pinpoint)
    return min(max(sides, default=DEFAULT_IMAGE_SIDE), MAX_IMAGE_SIDE)


def _size_items(setting):
    """A processor's size setting as (key, value) pairs: a dict or transformers' SizeDict."""
    if isinstance(setting, dict):
        return setting.items()
    return vars(setting).items() if dataclasses.is_dataclass(setting) else ()

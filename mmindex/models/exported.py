"""A model's towers exported once to ONNX and run by ONNX Runtime: how ingest and search embed
on the CPU, without importing torch or open_clip. torch stays for training, for the GPU, for
vision tokens (`ask`), for bf16 on request, and as the fallback whenever an export fails.

Why: a cold `mmindex search` spent 61 % of its time importing (torch alone 37 %) and 20 % in
`torch.jit.load`; a small ingest ~37 % importing (open_clip pulls in torchvision.models) and
~14 % building the model from its .pt file. A real peer, rclip, runs ONNX Runtime, whose
kernels also beat torch's fp32 GEMMs on the AVX2 EPYCs we measured (benchmarks/peer.py).

A model's export is a directory `<cache>/onnx/<fingerprint>/`:
- `export.json`: format, kind (which module reads it), the encoder's info, the image
  preprocessing (data/preprocess.py) and the text settings;
- `image.onnx` (pixels (N, 3, S, S) -> unit rows (N, D)) and `text.onnx` (token ids and
  attention mask (N, L) -> unit rows (N, D));
- `tokenizer.json` (a `tokenizers` tokenizer) and, made on first request, the int8 copies
  `image.int8.onnx` / `text.int8.onnx` (ONNX Runtime's dynamic quantisation).

It is written on first use by the process that has the torch model anyway (an ingest, or
the first search), each encoder class saying how through `export(directory) -> dict`, and
read through the `load_exported(directory, meta, precision)` function of the module the
kind names. A cache is only a cache: a damaged or foreign export is deleted and rewritten.
`MMINDEX_RUNTIME=torch` never uses or writes one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMAT = 1
RUNTIME_ENV = "MMINDEX_RUNTIME"  # "auto" (default): ONNX Runtime where it can; "torch": never
CACHE_ENV = "MMINDEX_CACHE"  # the cache directory; default: the user cache directory
KEEP = 4  # exports kept; the least recently used go (a ViT-B/32 is ~600 MB, ~700 with int8)
META = "export.json"
_LOADERS = {"clip": "mmindex.models.exported:ExportedClip.load",
            "starter": "mmindex.models.starter:load_exported"}


class NotExportable(Exception):
    """This encoder cannot be exported (its precision, tokenizer or preprocessing): it runs in
    torch, silently, as it always did."""


def enabled() -> bool:
    return os.environ.get(RUNTIME_ENV, "auto") != "torch"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mmindex"))


def export_dir(fingerprint: str) -> Path:
    return cache_dir() / "onnx" / fingerprint


def load(fingerprint: str, precision: str = "fp32"):
    """The exported model with this fingerprint as an Encoder (`precision` fp32 or int8), or
    None: the caller then loads the torch model, and `save` writes an export."""
    directory = export_dir(fingerprint)
    if not enabled() or not (directory / META).is_file():
        return None
    try:
        meta = json.loads((directory / META).read_text())
        if meta.get("format") != FORMAT:
            shutil.rmtree(directory, ignore_errors=True)
            return None
        module_name, _, function = _LOADERS[meta["kind"]].partition(":")
        target = importlib.import_module(module_name)
        for part in function.split("."):
            target = getattr(target, part)
        encoder = target(directory, meta, precision)
        if encoder.info.fingerprint != fingerprint:
            raise ValueError(f"it holds model {encoder.info.fingerprint}")
        os.utime(directory / META)  # recently used: `evict` keeps it
    except Exception as exc:  # any unreadable export: the torch model still answers
        warnings.warn(f"discarding the exported model in {directory}: {exc}", stacklevel=2)
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return encoder


def save(encoder) -> Path | None:
    """Export the encoder's towers once (best effort: a failure only warns)."""
    export = getattr(encoder, "export", None)
    directory = export_dir(encoder.info.fingerprint)
    if export is None or not enabled() or (directory / META).is_file():
        return None
    try:
        from mmindex.core.atomic import staged_directory

        # a reader sees a whole export or none; another process's finished copy wins
        with staged_directory(directory, replace=False) as staging:
            meta = {"format": FORMAT, "info": dataclasses.asdict(encoder.info),
                    **export(staging)}
            (staging / META).write_text(json.dumps(meta, indent=2))
        evict(keep=KEEP)
    except NotExportable:
        return None
    except Exception as exc:
        warnings.warn(f"could not export the model for ONNX Runtime ({exc}); it keeps running "
                      "in torch", stacklevel=2)
        return None
    return directory


def export_and_load(encoder, precision: str = "fp32"):
    """The torch `encoder` as its exported Encoder, exported now unless it already is; None
    when it cannot be exported (or ONNX Runtime is off)."""
    save(encoder)
    return load(encoder.info.fingerprint, precision)


def evict(keep: int) -> list[Path]:
    """Delete all but the `keep` most recently used exports (by their export.json's time,
    which `load` touches); a process still reading one has its sessions open already."""
    exports = sorted(cache_dir().glob(f"onnx/*/{META}"),
                     key=lambda meta: meta.stat().st_mtime, reverse=True)
    gone = [meta.parent for meta in exports[keep:]]
    for directory in gone:
        shutil.rmtree(directory, ignore_errors=True)
    return gone


# The spec -> fingerprint shortcut: a new index learns its model's fingerprint without
# loading the torch model, when an earlier process exported it. Keyed by the canonical spec
# and stamps of what makes the model (files with their sizes and times, package versions),
# so replaced weights are a new key and load the torch model once more.


def spec_key(spec: str, stamps: Sequence[str] = ()) -> str:
    return hashlib.sha256(json.dumps([spec, FORMAT, *stamps]).encode()).hexdigest()[:24]


def remember_spec(key: str, fingerprint: str) -> None:
    from mmindex.core.atomic import write_atomically

    try:
        (cache_dir() / "onnx" / "specs").mkdir(parents=True, exist_ok=True)
        write_atomically(cache_dir() / "onnx" / "specs" / key, fingerprint)
    except OSError:
        pass  # only a shortcut: the next ingest loads the torch model once more


def fingerprint_of_spec(key: str) -> str | None:
    try:
        return (cache_dir() / "onnx" / "specs" / key).read_text().strip() or None
    except OSError:
        return None


# ---------------------------------------------------------------- writing the graphs


def export_graph(module, example: tuple, path: Path, input_names: Sequence[str],
                 dynamic: Sequence[dict]) -> None:
    """torch module -> one self-contained ONNX file (torch.onnx's dynamo exporter); `dynamic`
    names the dynamic axes of each input (batch size, text length)."""
    import torch

    dims = {}
    shapes = tuple({axis: dims.setdefault(name, torch.export.Dim(name, max=limit))
                    for axis, (name, limit) in spec.items()} for spec in dynamic)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, str(path), input_names=list(input_names),
                          output_names=["unit_rows"], dynamic_shapes=shapes, dynamo=True,
                          external_data=False, verbose=False, report=False)


def quantised(path: Path) -> Path:
    """The int8 copy of an exported graph, made once beside it: the weights of its matrix
    products int8, their activations quantised per call. Convolutions stay fp32: quantised
    (ConvInteger) they ran 4x slower than fp32 here. Recall cost: benchmarks/int8.py."""
    target = path.with_suffix(".int8.onnx")
    if not target.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from mmindex.core.atomic import atomic_path

        with atomic_path(target) as staging, _quiet_quantiser():
            quantize_dynamic(str(path), str(staging), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
    return target


@contextlib.contextmanager
def _quiet_quantiser():
    """The quantiser logs a 'consider pre-processing' advice at WARNING on every call."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------- running them


def threads() -> int:
    """Intra-op threads: the cores this process may use (ONNX Runtime's own default counts
    the machine's, which oversubscribes a Ray worker or a container)."""
    if os.environ.get("MMINDEX_THREADS"):
        return max(1, int(os.environ["MMINDEX_THREADS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads()
    options.inter_op_num_threads = 1  # one graph at a time; its operators use the threads
    options.log_severity_level = 3  # errors only: no notices on a user's terminal
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class LazySession:
    """A graph opened (and quantised) on first use, so a text search never reads the image
    graph."""

    def __init__(self, path: Path, int8: bool = False):
        self.path, self.int8, self._session = path, int8, None

    def __call__(self, **inputs: np.ndarray) -> np.ndarray:
        if self._session is None:
            self._session = session(quantised(self.path) if self.int8 else self.path)
        return self._session.run(None, inputs)[0]


def graph(directory: Path, name: str, precision: str) -> LazySession:
    return LazySession(Path(directory) / f"{name}.onnx", int8=precision == "int8")


class OnnxText:
    """A tokenizer and a text graph: `encode(texts)` -> (N, D) float32 rows."""

    def __init__(self, directory: Path, max_length: int, pad_id: int, precision: str):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=pad_id)  # to the longest text of the batch only
        self.run = graph(directory, "text", precision)

    def encode(self, texts: Sequence[str], **_) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)  # (N, L)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)  # (N, L)
        return self.run(ids=ids, mask=mask).astype(np.float32)


class ExportedClip:
    """A CLIP as exported by ClipEncoder.export: the Encoder contract in ONNX Runtime."""

    def __init__(self, info, preprocess, images: LazySession, text: OnnxText):
        self.info, self.preprocess, self.images, self.text = info, preprocess, images, text

    @classmethod
    def load(cls, directory: Path, meta: dict, precision: str = "fp32") -> ExportedClip:
        from mmindex.data.preprocess import from_dict
        from mmindex.models.encoder import EncoderInfo

        text = OnnxText(directory, meta["max_length"], meta["pad_id"], precision)
        return cls(EncoderInfo(**meta["info"]), from_dict(meta["preprocess"]),
                   graph(directory, "image", precision), text)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return self.images(pixels=np.asarray(pixels, np.float32))  # (N, D)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.info.dim), np.float32)
        return self.text.encode([clean_lower(t) for t in texts])


def clean_lower(text: str) -> str:
    """open_clip's `_clean_lower` (ftfy, HTML entities twice, whitespace runs, lower case),
    restated so a query is cleaned without importing open_clip; a test compares the two."""
    import html

    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()

"""Text queries without the image tower: a TorchScript copy of a model's text side, cached
by the model's fingerprint, so a cold `mmindex search "…"` imports torch and tokenizers only.

Why: building the full model for one text query imported open_clip, timm, torchvision and
sentence-transformers (3–5 s here before any weight was read) and built an image tower the
query never uses. The first text search of a model exports its text side; every later
process loads that instead (about 0.1 s after torch).

Why TorchScript, which torch marks deprecated in favour of torch.export: loading an exported
program took 1.8 s plus 0.5 s on its first call (it imports the compiler stack), a
TorchScript archive 0.08 s. torch is pinned, the archive records the torch version that
wrote it, and any failure to write or read a tower falls back to the full model. Set
MMINDEX_TEXT_TOWER=0 to never use or write one.

A tower is a directory `<cache>/text-towers/<fingerprint>/`: `tower.json` (format, kind,
torch version, the encoder's info), `text.pt` (the traced module: token ids and attention
mask -> unit text embeddings) and `tokenizer.json` (a `tokenizers` tokenizer). Each encoder
class that can be split says how, through `export_text_tower(directory) -> dict` and a
`load_text_tower(directory, meta)` function in its module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMAT = 1
ENV = "MMINDEX_TEXT_TOWER"  # "0" disables
CACHE_ENV = "MMINDEX_CACHE"  # the cache directory; default: the user cache directory
KEEP = 8  # towers kept; the least recently used go (a ViT-B/32 text side is ~250 MB)
_LOADERS = {"starter": "mmindex.models.starter:load_text_tower",
            "clip": "mmindex.models.clip:load_text_tower"}


class NotExportable(Exception):
    """This encoder's text side cannot be split off (its precision, its tokenizer): searches
    load the full model, silently, as they always did."""


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mmindex"))


def tower_dir(fingerprint: str) -> Path:
    return cache_dir() / "text-towers" / fingerprint


def load(fingerprint: str):
    """The cached text side of the model with this fingerprint, or None: the caller loads the
    full model instead, and `save` writes a new tower. A tower from another torch or format,
    or a damaged one, is deleted here so that it is rewritten (it is only a cache)."""
    directory = tower_dir(fingerprint)
    if not enabled() or not (directory / "tower.json").is_file():
        return None
    try:
        import importlib

        import torch

        meta = json.loads((directory / "tower.json").read_text())
        if meta.get("format") != FORMAT or meta.get("torch") != torch.__version__:
            shutil.rmtree(directory, ignore_errors=True)
            return None
        module_name, _, function = _LOADERS[meta["kind"]].partition(":")
        tower = getattr(importlib.import_module(module_name), function)(directory, meta)
        if tower.info.fingerprint != fingerprint:
            raise ValueError(f"it holds model {tower.info.fingerprint}")
        os.utime(directory / "tower.json")  # recently used: `evict` keeps it
    except Exception as exc:  # any unreadable tower: the full model still answers
        warnings.warn(f"discarding the cached text model in {directory}: {exc}", stacklevel=2)
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return tower


def save(encoder) -> Path | None:
    """Export the encoder's text side once (best effort: a failure only warns)."""
    export = getattr(encoder, "export_text_tower", None)
    directory = tower_dir(encoder.info.fingerprint)
    if export is None or not enabled() or (directory / "tower.json").is_file():
        return None
    try:
        import torch

        from mmindex.core.atomic import staged_directory

        # a reader sees a whole tower or none; another process's finished copy wins
        with staged_directory(directory, replace=False) as staging:
            meta = {"format": FORMAT, "torch": torch.__version__,
                    "info": dataclasses.asdict(encoder.info), **export(staging)}
            (staging / "tower.json").write_text(json.dumps(meta, indent=2))
        evict(keep=KEEP)
    except NotExportable:
        return None
    except Exception as exc:
        warnings.warn(f"could not cache the text model for fast search ({exc}); searches "
                      "keep loading the full model", stacklevel=2)
        return None
    return directory


def evict(keep: int) -> list[Path]:
    """Delete all but the `keep` most recently used towers (by their tower.json's time, which
    `load` touches); a process still reading one falls back to the full model."""
    towers = sorted(cache_dir().glob("text-towers/*/tower.json"),
                    key=lambda meta: meta.stat().st_mtime, reverse=True)
    gone = [meta.parent for meta in towers[keep:]]
    for directory in gone:
        shutil.rmtree(directory, ignore_errors=True)
    return gone


# ---------------------------------------------------------------- the pieces both kinds use


def trace(module, example_ids, example_mask):
    """TorchScript of `module(ids, mask) -> (N, D)`, without torch's deprecation warning."""
    import torch

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module.eval(), (example_ids, example_mask), check_trace=False)


def save_module(traced, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save's deprecation notice
        torch.jit.save(traced, str(path))


def load_module(path: Path):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


class TracedText:
    """A tokenizer and a traced text module: `encode(texts)` -> (N, D) unit float32 rows, the
    surface of a sentence-transformers model (extra keywords are accepted and ignored)."""

    def __init__(self, tokenizer, module):
        self.tokenizer, self.module = tokenizer, module

    @classmethod
    def from_dir(cls, directory: Path, max_length: int, pad_id: int) -> TracedText:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding(pad_id=pad_id)  # to the longest text of the batch only
        return cls(tokenizer, load_module(directory / "text.pt"))

    def encode(self, texts: Sequence[str], **_) -> np.ndarray:
        import torch

        encoded = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encoded])  # (N, L)
        mask = torch.tensor([e.attention_mask for e in encoded])  # (N, L)
        # Without the graph optimiser: it profiles the first calls of every new query length
        # (65 ms against 12 ms for a first query here) and a query is rarely repeated.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            return self.module(ids, mask).float().numpy()

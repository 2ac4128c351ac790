"""What the tests (and benchmarks) build: tiny models with deterministic random weights, and
the awkward files real photo folders hold. Nothing here downloads anything.

`test-tiny` names the tiny CLIP (models/registry.py) and the tiny Llama (models/llm.py); both
resolve to the builders below by name."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from mmindex.models.encoder import Encoder
from mmindex.models.llm import CHATML_TEMPLATE, TEST_TINY, LoadedLlm, frozen

TINY = TEST_TINY


def build_test_tiny() -> Encoder:
    """A ~1M-parameter CLIP with deterministic random weights: fast, and only for tests."""
    import open_clip

    from mmindex.models import clip
    from mmindex.models.registry import register_mmindex_configs

    register_mmindex_configs()

    return clip.build_from_config(open_clip.get_model_config("mmindex-tiny"), "test-tiny",
                                  "mmindex-tiny")


def build_test_tiny_llm(layers: int = 2, hidden: int = 64) -> LoadedLlm:
    """A random Llama (seed 0) with a byte-level tokenizer built in memory: no files, no hub."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         initializer_range=0.1,  # the default 0.02 gives near-uniform logits
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    from mmindex.models.encoder import fingerprint_state_dict

    return LoadedLlm(frozen(model), tokenizer, TEST_TINY,
                     fingerprint_state_dict(model.state_dict()))


def _byte_tokenizer():
    """Byte-level BPE with no merges: every byte is a token, plus ChatML's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", pad_token="<|pad|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


# ---------------------------------------------------------------- awkward files


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like image: smooth gradients plus noise, so JPEG sizes are realistic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def write_bomb_png(path: Path, width: int = 60_000, height: int = 60_000) -> None:
    """A valid PNG header claiming a huge size over a tiny body: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("1", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def make_awkward_folder(root: Path) -> dict[str, list[str]]:
    """Write every kind of file a real folder holds; return which should index and which fail."""
    root.mkdir(parents=True, exist_ok=True)
    good, bad = [], []

    def keep(name):
        good.append(str(root / name))

    photo(64, 48, 0).save(root / "plain.jpg", quality=90); keep("plain.jpg")
    photo(64, 48, 1).save(root / "UPPER.JPG", quality=90); keep("UPPER.JPG")
    photo(50, 40, 2).save(root / "café ünïcode 写真.jpg"); keep("café ünïcode 写真.jpg")
    photo(40, 40, 3).convert("CMYK").save(root / "cmyk.jpg"); keep("cmyk.jpg")
    sixteen = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "sixteen.png"); keep("sixteen.png")
    frames = [Image.new("P", (30, 30), i * 40) for i in range(3)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:]); keep("anim.gif")
    rotated = photo(80, 40, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display: the upright image is 40 wide, 80 high
    rotated.save(root / "rotated.jpg", exif=exif); keep("rotated.jpg")
    rgba = Image.new("RGBA", (30, 30), (255, 0, 0, 0))
    rgba.save(root / "clear.png"); keep("clear.png")
    (root / ".hidden").mkdir()
    photo(20, 20, 5).save(root / ".hidden" / "secret.jpg")  # skipped, not failed
    full = io.BytesIO()
    photo(64, 64, 6).save(full, "JPEG")
    (root / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    bad.append(str(root / "truncated.jpg"))
    (root / "empty.png").write_bytes(b""); bad.append(str(root / "empty.png"))
    (root / "notes.jpg").write_text("this is text, not a picture"); bad.append(str(root / "notes.jpg"))
    write_bomb_png(root / "bomb.png"); bad.append(str(root / "bomb.png"))
    return {"good": good, "bad": bad}

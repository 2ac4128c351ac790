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


def scene_photo(seed: int) -> Image.Image:
    """A photo with six random discs on it: distinct scenes for duplicate tests, whose
    resized and re-encoded copies must still group with it."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    img = photo(160, 120, seed)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.integers(0, 140, 2)
        r = int(rng.integers(10, 40))
        draw.ellipse([x, y, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


def write_duplicate_album(root: Path, scenes: int) -> Path:
    """`scenes` distinct photos, plus of the first a resized copy and a re-encoded one, and
    of the second the same bytes in copies/: what duplicate finding must group."""
    import shutil

    for i in range(scenes):
        scene_photo(i).save(root / f"s{i}.jpg", quality=92)
    scene_photo(0).resize((80, 60)).save(root / "s0_small.jpg", quality=92)  # resized
    Image.open(root / "s0.jpg").save(root / "s0_q40.jpg", quality=40)  # re-encoded
    (root / "copies").mkdir()
    shutil.copy(root / "s1.jpg", root / "copies" / "s1.jpg")  # the same bytes twice
    return root


# The tiny test model crowds every embedding together: copies of one scene lie within 1e-4
# of each other, different scenes about 2e-3 apart (measured), so its threshold is 0.999.
TINY_DUPLICATE_THRESHOLD = 0.999


def write_bomb_png(path: Path, width: int = 60_000, height: int = 60_000) -> None:
    """A valid PNG header claiming a huge size over a tiny body: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("1", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def write_pdf(path: Path, pages: list[str | None], password: str | None = None) -> Path:
    """A PDF (fpdf2) of one page per entry: the text as its text layer (None: a page with no
    text, like a scan) above a block whose colour and place differ by page, so no two pages
    render alike. With `password`, encrypted with it as the user password (AES-128)."""
    from fpdf import FPDF
    from fpdf.enums import EncryptionMethod

    pdf = FPDF()
    pdf.set_font("helvetica", size=16)
    for number, text in enumerate(pages, 1):
        pdf.add_page()
        if text is not None:
            pdf.multi_cell(w=0, text=text)
        pdf.set_fill_color(37 * number % 256, 91 * number % 256, 163 * number % 256)
        pdf.rect(x=20 + 13 * number % 120, y=80 + 29 * number % 150, w=60, h=60, style="F")
    if password is not None:
        pdf.set_encryption(owner_password=password + "-owner", user_password=password,
                           encryption_method=EncryptionMethod.AES_128)
    pdf.output(str(path))
    return path


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


# ---------------------------------------------------------------- tiny vision-language models



def vlm_chat_template(image: str) -> str:
    """ChatML, where a message's content may be a list of parts as processors pass it: an
    image part renders as `image`, the placeholder the family's processor expands into its
    image tokens."""
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}" + image +
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


VLM_CHAT_TEMPLATE = vlm_chat_template("<image>")  # LLaVA's and Idefics3's placeholder
QWEN2_VL_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
TINY_VLM_SIDE = 32  # input side of both tiny vision towers: 4 x 4 patches of 8 px
TINY_VLM_PATCH = 8
# Seed 1, not 0: with seed 0 the tiny LLaVA's greedy reply is one token repeated whatever the
# image, and tests could not tell whether the image reached the model.
TINY_VLM_SEED = 1
_TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "image_size": TINY_VLM_SIDE, "patch_size": TINY_VLM_PATCH}


def write_tiny_llava(out_dir: Path) -> Path:
    """A ~140K-parameter random LLaVA (CLIP ViT + Llama, TINY_VLM_SEED) with its LlavaProcessor,
    written by `save_pretrained` as llava-hf/... models are: it loads back by directory
    through AutoModelForImageTextToText + AutoProcessor. Each image is 16 `<image>` tokens."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _vlm_tokenizer(["<image>"])
    config = LlavaConfig(vision_config=CLIPVisionConfig(**_TINY_VISION),
                         text_config=_tiny_text_config(tokenizer),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    side = TINY_VLM_SIDE
    image_processor = CLIPImageProcessor(size={"shortest_edge": side},
                                         crop_size={"height": side, "width": side})
    # "default" drops the CLS token the processor counts as the additional one
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=TINY_VLM_PATCH, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=VLM_CHAT_TEMPLATE)
    return _save_tiny_vlm(LlavaForConditionalGeneration, config, processor, out_dir)


def write_tiny_idefics3(out_dir: Path) -> Path:
    """A ~140K-parameter random Idefics3 (the SmolVLM architecture: SigLIP-style tower, pixel
    shuffle, Llama; TINY_VLM_SEED) with its Idefics3Processor, no image splitting: each image is
    `<fake_token_around_image><global-img>` + 4 `<image>` + `<fake_token_around_image>`."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    tokenizer = _vlm_tokenizer(["<image>", "<fake_token_around_image>", "<global-img>",
                                "<end_of_utterance>"])
    scale = 2  # pixel shuffle: 16 patches become 16 / scale**2 image tokens
    config = Idefics3Config(vision_config=Idefics3VisionConfig(**_TINY_VISION),
                            text_config=_tiny_text_config(tokenizer), scale_factor=scale,
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    side = {"longest_edge": TINY_VLM_SIDE}
    image_processor = Idefics3ImageProcessor(size=side, max_image_size=side,
                                             do_image_splitting=False)
    tokens = (TINY_VLM_SIDE // TINY_VLM_PATCH) ** 2 // scale**2  # per image
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=tokens, chat_template=VLM_CHAT_TEMPLATE)
    return _save_tiny_vlm(Idefics3ForConditionalGeneration, config, processor, out_dir)


def write_tiny_qwen2_vl(out_dir: Path) -> Path:
    """A ~160K-parameter random Qwen2-VL (TINY_VLM_SEED) with its Qwen2VLProcessor; images are
    resized to 32 x 32 pixels (16 patches of 8 px, merged 2 x 2: 4 `<|image_pad|>` tokens)."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    template = vlm_chat_template(QWEN2_VL_IMAGE)
    tokenizer = _vlm_tokenizer(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                "<|video_pad|>"], template)
    text = _tiny_text_config(tokenizer).to_dict()
    # multimodal rotary embedding: the 8 rotary pairs of a 16-wide head split over time,
    # height and width
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                               "mrope_section": [4, 2, 2]}
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": text["hidden_size"], "num_heads": 4,
              "mlp_ratio": 2, "patch_size": TINY_VLM_PATCH, "spatial_merge_size": 2,
              "temporal_patch_size": 2}
    token = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(vision_config=vision, text_config=text,
                           vision_start_token_id=token("<|vision_start|>"),
                           vision_end_token_id=token("<|vision_end|>"),
                           image_token_id=token("<|image_pad|>"),
                           video_token_id=token("<|video_pad|>"))
    pixels = {"min_pixels": TINY_VLM_SIDE**2, "max_pixels": TINY_VLM_SIDE**2,
              "patch_size": TINY_VLM_PATCH, "merge_size": 2, "temporal_patch_size": 2}
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels),
                                 video_processor=Qwen2VLVideoProcessor(**pixels),
                                 tokenizer=tokenizer, chat_template=template)
    return _save_tiny_vlm(Qwen2VLForConditionalGeneration, config, processor, out_dir)


def _vlm_tokenizer(special: list[str], template: str = VLM_CHAT_TEMPLATE):
    """The tiny Llama's byte tokenizer plus the image tokens a family's processor looks up."""
    tokenizer = _byte_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    tokenizer.chat_template = template
    return tokenizer


def _tiny_text_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512,
                       initializer_range=0.1,  # as the tiny Llama: 0.02 gives near-uniform logits
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def _save_tiny_vlm(model_class, config, processor, out_dir: Path) -> Path:
    import torch

    out_dir = Path(out_dir)
    with torch.random.fork_rng():
        torch.manual_seed(TINY_VLM_SEED)
        model = model_class(config)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def photo_exif(taken: str | None = None, make: str | None = None, model: str | None = None,
               lens: str | None = None, gps: tuple[float, float] | None = None) -> Image.Exif:
    """EXIF as a camera writes it (Pillow's writer), for photos saved with `exif=`: `taken`
    in EXIF's "YYYY:MM:DD HH:MM:SS", `gps` as signed decimal degrees (lat, lon)."""
    from PIL import ExifTags

    exif = Image.Exif()
    for tag, value in ((ExifTags.Base.Make, make), (ExifTags.Base.Model, model)):
        if value is not None:
            exif[tag] = value
    details = exif.get_ifd(ExifTags.IFD.Exif)
    for tag, value in ((ExifTags.Base.DateTimeOriginal, taken), (ExifTags.Base.LensModel, lens)):
        if value is not None:
            details[tag] = value
    if gps is not None:
        where = exif.get_ifd(ExifTags.IFD.GPSInfo)
        for (ref, tag, signs), value in zip(
                ((ExifTags.GPS.GPSLatitudeRef, ExifTags.GPS.GPSLatitude, "NS"),
                 (ExifTags.GPS.GPSLongitudeRef, ExifTags.GPS.GPSLongitude, "EW")), gps):
            where[ref] = signs[value < 0]
            minutes, seconds = divmod(abs(value) * 3600.0, 60.0)
            where[tag] = (float(int(minutes // 60)), float(int(minutes % 60)), round(seconds, 4))
    return exif

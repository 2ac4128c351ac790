"""Pretrained vision-language models through transformers (models/hf_vlm.py), with tiny random
LLaVA and Idefics3 (SmolVLM) models saved by `save_pretrained` and loaded back by directory:
the path a hub id takes once it is in the cache."""

import time

import pytest

pytest.importorskip("transformers")
import torch
from PIL import Image

from mmindex.core.precision import resolve_precision
from mmindex.errors import ModelError
from mmindex.models import clip, hf_vlm
from mmindex.models.hf_vlm import describe_hf_vlm, load_hf_vlm
from mmindex.models.llm import ASK_EXTRA_MISSING, piece_streamer
from mmindex.testing import (
    TINY_VLM_SIDE,
    build_test_tiny_llm,
    photo,
    write_tiny_idefics3,
    write_tiny_llava,
    write_tiny_qwen2_vl,
)

FAMILIES = {"llava": (write_tiny_llava, "LlavaForConditionalGeneration"),
            "idefics3": (write_tiny_idefics3, "Idefics3ForConditionalGeneration"),
            "qwen2_vl": (write_tiny_qwen2_vl, "Qwen2VLForConditionalGeneration")}
NO_SUCH_HUB_ID = "mmindex-tests/no-such-vlm"  # never in anyone's cache
QUESTION = "what is in the photo?"
TOKENS = 8


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each tiny family written once: {family: directory}."""
    root = tmp_path_factory.mktemp("vlms")
    return {name: write(root / name) for name, (write, _) in FAMILIES.items()}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param


@pytest.fixture(scope="module")
def vlm(saved, family):
    return load_hf_vlm(str(saved[family]), precision="fp32")


def images(count: int) -> list[Image.Image]:
    return [photo(64, 48, seed) for seed in range(count)]


def test_saved_directory_loads_as_its_family(vlm, saved, family):
    assert type(vlm.model).__name__ == FAMILIES[family][1]
    assert vlm.name == str(saved[family]) and vlm.device.type == "cpu"
    assert vlm.dtype == torch.float32 and not vlm.model.training
    assert not any(p.requires_grad for p in vlm.model.parameters())
    assert sum(p.numel() for p in vlm.model.parameters()) < 5_000_000
    assert vlm.image_side == TINY_VLM_SIDE


def test_builders_are_deterministic(vlm, family, tmp_path):
    again = load_hf_vlm(str(FAMILIES[family][0](tmp_path / "again")), precision="fp32")
    assert again.fingerprint == vlm.fingerprint and len(vlm.fingerprint) == 16


@pytest.mark.parametrize("count", [0, 1, 2])
def test_answers_with_any_number_of_images(vlm, count):
    text, new_tokens = vlm.answer(QUESTION, images(count), max_new_tokens=TOKENS)
    assert isinstance(text, str) and text == text.strip() and text
    assert 0 < new_tokens <= TOKENS


def test_the_images_reach_the_model(vlm):
    red, blue = Image.new("RGB", (40, 40), "red"), Image.new("RGB", (40, 40), "blue")
    answers = {vlm.answer(QUESTION, shown, TOKENS)[0] for shown in ([], [red], [blue])}
    assert len(answers) == 3


def test_greedy_answers_repeat(vlm):
    assert vlm.answer(QUESTION, images(2), TOKENS) == vlm.answer(QUESTION, images(2), TOKENS)


@pytest.mark.parametrize("count", [0, 1])
def test_streamed_pieces_join_to_the_answer(vlm, count):
    pieces = []
    text, _ = vlm.answer(QUESTION, images(count), 16, on_text=pieces.append)
    assert pieces and all(pieces) and "".join(pieces) == text


def test_streamer_holds_back_the_whitespace_around_the_answer():
    pieces = []
    streamer = piece_streamer(build_test_tiny_llm().tokenizer, pieces.append)
    for chunk in (" \n", " a", " b ", "\n", "c  ", " "):
        streamer.on_finalized_text(chunk)
    streamer.on_finalized_text("", stream_end=True)
    assert "".join(pieces) == "a b \nc"


def test_default_precision_is_the_policys(saved):
    loaded = load_hf_vlm(str(saved["idefics3"]))
    expected = {"fp32": torch.float32, "bf16": torch.bfloat16}[resolve_precision("auto", "cpu")]
    assert loaded.dtype == expected
    assert loaded.answer(QUESTION, images(1), TOKENS)[1] > 0


def test_describe_names_the_architecture(saved):
    assert describe_hf_vlm(str(saved["llava"])).endswith("LlavaForConditionalGeneration")
    assert "not available here" in describe_hf_vlm(NO_SUCH_HUB_ID)


def fails_fast(spec: str, *words: str) -> str:
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        load_hf_vlm(spec)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message
    return message


def test_a_text_only_model_directory_is_named(tmp_path):
    llm = build_test_tiny_llm()
    llm.model.save_pretrained(tmp_path / "llama")
    llm.tokenizer.save_pretrained(tmp_path / "llama")
    fails_fast(str(tmp_path / "llama"), str(tmp_path / "llama"), "image processor")


def test_other_local_paths_are_named(tmp_path):
    fails_fast(str(tmp_path), str(tmp_path), "not a loadable vision-language model")
    (tmp_path / "weights.bin").write_bytes(b"")
    fails_fast(str(tmp_path / "weights.bin"), "is not a directory")
    fails_fast(str(tmp_path / "missing"), "is not a directory")


def test_offline_hub_id_fails_fast_with_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(clip, "hub_reachable", lambda timeout=3.0: pytest.fail("probed"))
    fails_fast(NO_SUCH_HUB_ID, NO_SUCH_HUB_ID, "HF_HUB_OFFLINE", "local directory")


def test_unreachable_hub_fails_fast_with_what_to_do(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(clip, "hub_reachable", lambda timeout=3.0: False)
    fails_fast(NO_SUCH_HUB_ID, NO_SUCH_HUB_ID, "cannot be reached", "download it once")


def test_without_transformers_the_extra_is_named(monkeypatch, saved):
    monkeypatch.setattr(hf_vlm, "ask_extra_installed", lambda: False)
    assert fails_fast(str(saved["llava"])) == ASK_EXTRA_MISSING


@pytest.mark.parametrize("processor, side", [
    ("CLIPImageProcessor", 224), ("Idefics3ImageProcessor", 1456),
    ("LlavaNextImageProcessor", 1008), ("Qwen2VLImageProcessor", 1001),
])
def test_image_side_reads_each_familys_sizes(processor, side):
    import transformers

    assert hf_vlm._image_side(getattr(transformers, processor)()) == side


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_answers_on_cuda(saved, family):
    on_gpu = load_hf_vlm(str(saved[family]), device="cuda")
    assert on_gpu.device.type == "cuda"
    assert on_gpu.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    pieces = []
    text, new_tokens = on_gpu.answer(QUESTION, images(2), TOKENS, on_text=pieces.append)
    assert new_tokens > 0 and "".join(pieces) == text
    on_cpu = load_hf_vlm(str(saved[family]), precision="fp32")
    assert on_gpu.fingerprint == on_cpu.fingerprint  # of the stored weights, not the cast

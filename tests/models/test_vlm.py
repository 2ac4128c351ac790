"""Splicing image tokens into the LLM's embeddings, the loss mask, multi-image prompts and
projector checkpoints, with a tiny random Llama and the tiny CLIP."""

import pytest

pytest.importorskip("transformers")
import torch

from mmindex.errors import ModelMismatchError, UserInputError
from mmindex.testing import build_test_tiny_llm
from mmindex.models.vlm import (
    IGNORE_INDEX,
    WEIGHTS_FILE,
    PromptError,
    Vlm,
    VlmConfig,
    build_example,
    collate,
    encode_prompt,
    image_prompt,
    load_trained_state,
    load_vlm,
    save_vlm,
)

T, C = 4, 24  # image tokens per image, vision width


@pytest.fixture(scope="module")
def llm():
    return build_test_tiny_llm()


def make_vlm(llm, unfrozen: int = 0, vision_fingerprint: str = "vision-fp") -> Vlm:
    config = VlmConfig("mlp2x_gelu", C, llm.hidden_size, T, "test-vision", vision_fingerprint,
                       llm.name, llm.fingerprint, unfrozen_layers=unfrozen)
    torch.manual_seed(0)
    return Vlm(config, llm)


def test_each_placeholder_becomes_t_masked_slots(llm):
    ids, mask = encode_prompt(llm.tokenizer, "[1] <image>\n[2] <image>\nWhat?", 2, T)
    assert sum(mask) == 2 * T
    runs = "".join("x" if m else "." for m in mask)
    assert runs.count("x" * T) == 2 and "x" * (T + 1) not in runs.replace("x" * T + "\n", "")
    text = llm.tokenizer.decode([i for i, m in zip(ids, mask) if not m])
    assert text == "[1] \n[2] \nWhat?"


@pytest.mark.parametrize("placeholders, images", [(1, 2), (2, 1), (0, 1), (1, 0)])
def test_placeholder_count_mismatch_is_an_error(llm, placeholders, images):
    text = "<image> " * placeholders + "What?"
    with pytest.raises(PromptError, match=f"{placeholders} <image> placeholders but {images}"):
        encode_prompt(llm.tokenizer, text, images, T)
    assert issubclass(PromptError, UserInputError)


def test_image_prompt_introduces_each_image_with_its_citation_tag():
    assert image_prompt("Q?", 3) == "[1] <image>\n[2] <image>\n[3] <image>\nQ?"
    assert image_prompt("Q?", 0) == "Q?"


def test_labels_cover_the_answer_tokens_only(llm):
    example = build_example(llm.tokenizer, "What color?", [0], T, answer="red")
    supervised = [label for label in example.labels if label != IGNORE_INDEX]
    assert llm.tokenizer.decode(supervised) == "red<|im_end|>"
    n = len(supervised)
    assert example.labels[-n:] == example.input_ids[-n:]  # labels are the answer's own ids
    assert not any(example.image_mask[-n:])


def test_splice_puts_projected_tokens_exactly_in_the_slots(llm):
    vlm = make_vlm(llm)
    examples = [build_example(llm.tokenizer, "One?", [0], T),
                build_example(llm.tokenizer, "Two?", [1, 2], T)]
    batch = collate(examples, llm.tokenizer.pad_token_id, left_pad=True)
    features = torch.randn(3, T, C)  # three images, in slot order
    with torch.no_grad():
        embeds = vlm.embed(batch, features)  # (2, L, H)
        text = vlm.llm.get_input_embeddings()(batch.input_ids)
        projected = vlm.projector(features)  # (3, T, H)
    torch.testing.assert_close(embeds[~batch.image_mask], text[~batch.image_mask])
    first = batch.image_mask[0].nonzero().squeeze(1)
    second = batch.image_mask[1].nonzero().squeeze(1)
    torch.testing.assert_close(embeds[0, first], projected[0])
    torch.testing.assert_close(embeds[1, second[:T]], projected[1])  # [1] gets image 1
    torch.testing.assert_close(embeds[1, second[T:]], projected[2])  # [2] gets image 2
    assert batch.images == [0, 1, 2]


def test_feature_count_must_match_the_slots(llm):
    vlm = make_vlm(llm)
    batch = collate([build_example(llm.tokenizer, "Two?", [0, 1], T)], llm.tokenizer.pad_token_id)
    with pytest.raises(PromptError, match="8 image slots but 1 images"):
        vlm.embed(batch, torch.randn(1, T, C))


def test_loss_is_cross_entropy_on_answer_tokens_only(llm):
    vlm = make_vlm(llm)
    examples = [build_example(llm.tokenizer, "Color?", [0], T, answer="red"),
                build_example(llm.tokenizer, "A longer question?", [1], T, answer="a blue one")]
    batch = collate(examples, llm.tokenizer.pad_token_id)
    features = torch.randn(2, T, C)
    loss = vlm.loss(batch, features)
    with torch.no_grad():
        logits = vlm.llm(inputs_embeds=vlm.embed(batch, features),
                         attention_mask=batch.attention_mask).logits  # (B, L, V)
    targets = batch.labels[:, 1:]  # position t predicts token t + 1
    keep = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep])
    torch.testing.assert_close(loss.detach(), manual, rtol=1e-4, atol=1e-4)
    assert int(keep.sum()) == len("red") + 1 + len("a blue one") + 1  # bytes + end token


def test_gradients_reach_the_projector_but_not_the_frozen_llm(llm):
    vlm = make_vlm(llm)
    batch = collate([build_example(llm.tokenizer, "Color?", [0], T, answer="red")],
                    llm.tokenizer.pad_token_id)
    vlm.loss(batch, torch.randn(1, T, C)).backward()
    assert all(p.grad is not None for p in vlm.projector.parameters())
    assert all(p.grad is None for p in vlm.llm.parameters())


def test_training_steps_lower_the_loss(llm):
    """The projector alone can make a frozen LLM say which image it was shown."""
    vlm = make_vlm(llm)
    features = torch.randn(2, T, C)
    examples = [build_example(llm.tokenizer, "Which?", [i], T, answer=a)
                for i, a in enumerate(["a", "b"])]
    batch = collate(examples, llm.tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(vlm.projector.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = vlm.loss(batch, features)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_generate_returns_one_answer_per_prompt(llm):
    vlm = make_vlm(llm)
    examples = [build_example(llm.tokenizer, "One?", [0], T),
                build_example(llm.tokenizer, "Two?", [1, 2], T),
                build_example(llm.tokenizer, "None?", [], T)]
    batch = collate(examples, llm.tokenizer.pad_token_id, left_pad=True)
    answers = vlm.generate(batch, torch.randn(3, T, C), max_new_tokens=4)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


def test_checkpoint_round_trip(llm, tmp_path):
    vlm = make_vlm(llm)
    save_vlm(vlm, tmp_path / "ckpt", extra={"note": "kept"})
    loaded = load_vlm(tmp_path / "ckpt", llm, "vision-fp")
    for a, b in zip(vlm.projector.state_dict().values(), loaded.projector.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert loaded.config == vlm.config
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json",
                                                                   "model.safetensors"]


def test_unfrozen_llm_layers_are_saved_and_restored(tmp_path):
    llm = build_test_tiny_llm()  # its own copy: this test changes LLM weights
    vlm = make_vlm(llm, unfrozen=1)
    state = vlm.trainable_state()
    assert any(k.startswith("llm.model.layers.1.") for k in state)
    assert not any(k.startswith("llm.model.layers.0.") for k in state)
    assert not any("embed_tokens" in k for k in state)
    with torch.no_grad():
        vlm.llm.model.layers[1].mlp.down_proj.weight.add_(1.0)
    save_vlm(vlm, tmp_path / "ckpt")
    fresh = build_test_tiny_llm()
    loaded = load_vlm(tmp_path / "ckpt", fresh, "vision-fp")
    torch.testing.assert_close(loaded.llm.model.layers[1].mlp.down_proj.weight,
                               vlm.llm.model.layers[1].mlp.down_proj.weight)


def test_another_vision_model_or_llm_is_refused(llm, tmp_path):
    save_vlm(make_vlm(llm), tmp_path / "ckpt")
    with pytest.raises(ModelMismatchError, match="vision model 'test-vision'"):
        load_vlm(tmp_path / "ckpt", llm, "another-fp")
    other = build_test_tiny_llm(layers=1)
    with pytest.raises(ModelMismatchError, match="trained against LLM"):
        load_vlm(tmp_path / "ckpt", other, "vision-fp")


def test_lora_adapters_train_alone_and_are_saved_and_restored(tmp_path):
    llm = build_test_tiny_llm()  # its own copy: LoRA is injected into the model in place
    config = VlmConfig("mlp2x_gelu", C, llm.hidden_size, T, "test-vision", "vision-fp",
                       llm.name, llm.fingerprint, lora_rank=2)
    vlm = Vlm(config, llm)
    trainable = {n for n, p in vlm.llm.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not any("lm_head" in n for n in trainable)
    with torch.no_grad():  # B starts at zero (the adapters change nothing): make them count
        for name, parameter in vlm.llm.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0, 0.5)
    save_vlm(vlm.eval(), tmp_path / "ckpt")
    ids = torch.tensor([[5, 6, 7, 8]])
    loaded = load_vlm(tmp_path / "ckpt", build_test_tiny_llm(), "vision-fp")
    fresh = build_test_tiny_llm()
    with torch.no_grad():
        expected = vlm.llm(input_ids=ids).logits
        torch.testing.assert_close(loaded.llm(input_ids=ids).logits, expected)
        assert not torch.allclose(fresh.model(input_ids=ids).logits, expected)


def test_adapters_into_a_model_without_lora_are_refused(tmp_path):
    from safetensors.torch import load_file

    llm = build_test_tiny_llm()
    config = VlmConfig("mlp2x_gelu", C, llm.hidden_size, T, "test-vision", "vision-fp",
                       llm.name, llm.fingerprint, lora_rank=2)
    save_vlm(Vlm(config, llm), tmp_path / "ckpt")
    plain = make_vlm(build_test_tiny_llm())
    with pytest.raises(ModelMismatchError, match="LoRA rank"):
        load_trained_state(plain, load_file(str(tmp_path / "ckpt" / WEIGHTS_FILE)),
                           tmp_path / "ckpt")


@pytest.mark.parametrize("change", [{"lora_rank": 4}, {"projector": "linear"},
                                    {"vision_dim": C + 8}])
def test_weights_of_other_shapes_are_a_mismatch_not_a_crash(tmp_path, change):
    import dataclasses

    from safetensors.torch import load_file

    llm = build_test_tiny_llm()
    config = VlmConfig("mlp2x_gelu", C, llm.hidden_size, T, "test-vision", "vision-fp",
                       llm.name, llm.fingerprint, lora_rank=2)
    save_vlm(Vlm(config, llm), tmp_path / "ckpt")
    other = Vlm(dataclasses.replace(config, **change), build_test_tiny_llm())
    with pytest.raises(ModelMismatchError, match="does not fit this model"):
        load_trained_state(other, load_file(str(tmp_path / "ckpt" / WEIGHTS_FILE)),
                           tmp_path / "ckpt")

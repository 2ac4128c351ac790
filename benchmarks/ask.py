"""Answering speed: prefill and greedy decoding with k retrieved images in the prompt.

    python benchmarks/ask.py --index shapes-idx        # an index with a trained projector
    python benchmarks/ask.py --tiny                    # seconds; what the test suite runs

For k = 0 (the baseline: the question alone, no image tokens), 1 and 3, the same question's
prompt is prefilled (a one-token generation) and then decoded for a fixed number of new
tokens (`min_new_tokens`, so an early end-of-answer cannot shorten the run); each time is
the best of three. Image tokens lengthen the prompt, which prefill pays once and every
decoded token pays again in attention: the ratios against k = 0 are that cost. The vision
tower's own time (reading and encoding the images) is measured apart. Last, a whole
`Generator.ask` with k = 3 both ways: each image asked alone (the default) against one joint
prompt (`joint=True`); their answers end where the LLM stops, so the ratio also holds how
much each one said. Peak RSS is the process's, models included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_mb, report

QUESTION = "What color is the circle?"


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(vlm, features, images: int, new_tokens: int) -> dict:
    """Prefill seconds and decoded tokens/s for one prompt holding `images` images."""
    import torch

    from mmindex.models.vlm import build_example, collate

    tokenizer = vlm.tokenizer
    example = build_example(tokenizer, QUESTION, list(range(images)), vlm.slots)
    batch = collate([example], tokenizer.pad_token_id, left_pad=True)
    embeds = vlm.embed(batch, features[:images])  # (1, L, H)

    def generate(n: int):
        with torch.inference_mode():
            vlm.llm.generate(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                             max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)

    prefill = best_of(3, lambda: generate(1))
    whole = best_of(3, lambda: generate(new_tokens))
    return {"prompt_tokens": int(batch.input_ids.shape[1]), "prefill_s": prefill,
            "decode_tokens_per_s": (new_tokens - 1) / max(whole - prefill, 1e-9)}


def tiny_generator(root: Path):
    """A tiny shapes index with a projector trained for one step (test-tiny models)."""
    from mmindex import IngestConfig, ingest
    from mmindex.data.shapes import write_shapes
    from mmindex.ask.generator import open_generator
    from mmindex.models.llm import TEST_TINY
    from mmindex.train.projector import TrainProjectorConfig, train_projector

    write_shapes(root / "data", n=6, seed=0, size=32)
    ingest(IngestConfig(roots=(root / "data" / "images",), index_dir=root / "idx",
                        model="test-tiny", precision="fp32"))
    train_projector(TrainProjectorConfig(
        vision_model="test-tiny", out_dir=root / "idx" / "projector", llm=TEST_TINY,
        questions=root / "data" / "questions.parquet", image_tokens=4, qa_steps=1,
        batch_size=2))
    return open_generator(root / "idx", llm=TEST_TINY)


def measure(generator, new_tokens: int) -> dict:
    from mmindex.ask.generator import AskConfig

    vlm, encoder = generator.answerer.vlm, generator.index.encoder  # a projector answerer
    paths = [Path(hit.path) for hit in generator.index.search(QUESTION, k=3)]
    vision_s = best_of(3, lambda: vlm.image_features(encoder, paths))
    features = vlm.image_features(encoder, paths)  # (3, T, C)
    by_k = {k: speed(vlm, features, k, new_tokens) for k in (0, 1, 3)}
    base = by_k[0]
    whole = {joint: best_of(3, lambda: generator.ask(QUESTION, AskConfig(
        k=3, threshold=float("-inf"), max_new_tokens=new_tokens, joint=joint)))
        for joint in (False, True)}
    return {"image_tokens": vlm.config.image_tokens, "vision_3_images_s": round(vision_s, 4),
            "ask_k3_each_s": round(whole[False], 4), "ask_k3_joint_s": round(whole[True], 4),
            "ask_k3_each_vs_joint": round(whole[False] / whole[True], 2),
            **{f"k{k}_{name}": round(value, 4) for k, row in by_k.items()
               for name, value in row.items()},
            **{f"k{k}_prefill_ratio": round(by_k[k]["prefill_s"] / base["prefill_s"], 2)
               for k in (1, 3)},
            **{f"k{k}_decode_ratio": round(by_k[k]["decode_tokens_per_s"]
                                           / base["decode_tokens_per_s"], 2) for k in (1, 3)}}


def main(argv=None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="an index with a trained projector")
    parser.add_argument("--tiny", action="store_true", help="test-tiny models, built here")
    parser.add_argument("--new-tokens", type=int, default=33)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.tiny and args.index is None:
        parser.error("give --index DIR or --tiny")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            generator = tiny_generator(Path(tmp))
        else:
            from mmindex.ask.generator import open_generator

            generator = open_generator(args.index)
        summary = {"llm": generator.answerer.vlm.config.llm, "threads": args.threads,
                   **measure(generator, args.new_tokens), "peak_rss_mb": round(peak_rss_mb())}
    rows = [("k images", "prompt tokens", "prefill s", "decode tok/s", "vs k=0 prefill",
             "vs k=0 decode")]
    for k in (0, 1, 3):
        rows.append((k, summary[f"k{k}_prompt_tokens"], f"{summary[f'k{k}_prefill_s']:.3f}",
                     f"{summary[f'k{k}_decode_tokens_per_s']:.1f}",
                     f"{summary.get(f'k{k}_prefill_ratio', 1.0):.2f}x",
                     f"{summary.get(f'k{k}_decode_ratio', 1.0):.2f}x"))
    rows.append(("ask k=3", "each alone", f"{summary['ask_k3_each_s']:.3f}", "joint",
                 f"{summary['ask_k3_joint_s']:.3f}", f"{summary['ask_k3_each_vs_joint']:.2f}x"))
    report(f"ask ({summary['image_tokens']} tokens per image)", rows, summary)
    return summary


if __name__ == "__main__":
    main()

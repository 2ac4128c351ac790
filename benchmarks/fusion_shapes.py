"""The three fusions under one budget on the shapes VQA: prefix (LLaVA), gated cross-attention
(Flamingo) and early fusion (patches as tokens), each trained for the same wall time on the
same data with the same LLM, then scored on held-out questions with the text-only baseline.

    python benchmarks/fusion_shapes.py --minutes 8 --out fusion-run   # SmolLM2-135M, ~45 min
    python benchmarks/fusion_shapes.py --tiny                         # seconds: what tests run

Steps: shapes train/val splits; a shapes CLIP trained from scratch for the prefix and the
cross-attention variants (early fusion reads pixels); per fusion, train-projector with a
caption stage then a QA stage, time-boxed (a quarter and three quarters of --minutes); then
eval vqa (full vs text-only) on the val split. The baseline is the prefix variant, the path
`ask` had before: the others' accuracy and answering speed are reported against it. Prints a
table and a JSON line, writes fusion.json and fusion.png under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_mb, report

FUSIONS = ("prefix", "cross-attention", "early")


def splits(out: Path, tiny: bool) -> tuple[Path, Path]:
    from mmindex.data.shapes import write_shapes

    n_train, n_val, size = (24, 12, 32) if tiny else (3000, 400, 96)
    for name, n, seed in (("train", n_train, 0), ("val", n_val, 1)):
        if not (out / name / "pairs.parquet").exists():
            write_shapes(out / name, n, seed=seed, size=size, overwrite=True)
    return out / "train", out / "val"


def vision_model(out: Path, train: Path, tiny: bool, epochs: int) -> str:
    """A shapes CLIP from scratch (the prefix and cross-attention variants read its tokens)."""
    if tiny:
        return "test-tiny"
    from mmindex.train.config import FinetuneConfig
    from mmindex.train.finetune import finetune

    clip = out / "clip"
    if not (clip / "model.safetensors").exists():
        finetune(FinetuneConfig(pairs=train / "pairs.parquet", out_dir=clip,
                                from_scratch="mmindex-shapes-rn", epochs=epochs, batch_size=128,
                                val_fraction=0.05))
    return str(clip)


def llm_spec(tiny: bool) -> str:
    if tiny:
        return "test-tiny"
    from mmindex.models.llm import default_llm_dir, install_smollm2

    return str(default_llm_dir() if default_llm_dir().exists() else install_smollm2())


def train(fusion: str, out: Path, train_dir: Path, clip: str, llm: str, minutes: float,
          tiny: bool) -> dict:
    from mmindex.train.config import TrainProjectorConfig
    from mmindex.train.projector import train_projector

    steps = 2 if tiny else 100_000  # the minutes end each stage
    config = TrainProjectorConfig(
        vision_model=clip, out_dir=out / fusion, llm=llm, fusion=fusion,
        captions=train_dir / "pairs.parquet", questions=train_dir / "questions.parquet",
        image_tokens=4 if tiny else 16, image_size=32 if tiny else 64, latents=0,
        caption_steps=steps, qa_steps=steps, caption_minutes=None if tiny else minutes / 4,
        qa_minutes=None if tiny else 3 * minutes / 4, batch_size=4 if tiny else 16,
        lora_rank=8 if fusion == "early" else 0, distractor_rate=0.0)
    started = time.perf_counter()
    result = train_projector(config)
    return {"train_s": time.perf_counter() - started,
            "steps": sum(s.steps for s in result.stages),
            "last_loss": result.stages[-1].last_loss if result.stages else None}


def evaluate(fusion: str, out: Path, val: Path, train_dir: Path, llm: str,
             per_kind: int) -> dict:
    from mmindex.eval.vqa import VqaConfig, run_vqa
    from mmindex.models.vlm import read_vlm_config

    modes = ("full", "text") if fusion == "prefix" else ("full",)
    prior = train_dir / "questions.parquet" if fusion == "prefix" else None
    result = run_vqa(VqaConfig(questions=val / "questions.parquet", checkpoint=out / fusion,
                               llm=llm, per_kind=per_kind, modes=modes, batch_size=16,
                               train_questions=prior))
    config = read_vlm_config(out / fusion)
    full = result.modes["full"]
    row = {"accuracy": full.accuracy | {"overall": full.overall},
           "hallucination": full.hallucination,
           "hallucination_interval": full.hallucination_interval,
           "answer_tokens_per_s": full.new_tokens / max(full.seconds, 1e-9),
           "context_per_image":
           1 if fusion == "cross-attention" else config.image_tokens,
           "trained_parameters": trained_parameters(out / fusion)}
    if "text" in result.modes:
        text = result.modes["text"]
        row["text_only"] = text.accuracy | {"overall": text.overall}
        row["prior"] = result.prior  # the majority answer of each question text
    return row


def trained_parameters(checkpoint: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(checkpoint / "model.safetensors"), "pt") as weights:
        return sum(weights.get_tensor(k).numel() for k in weights.keys())


def plot(results: dict, path: Path) -> None:
    from mmindex.core import plots

    kinds = [k for k in results["prefix"]["accuracy"] if k != "overall"] + ["overall"]
    figure, axes = plots.figure(size=(8.0, 3.5))
    bars = {f: results[f]["accuracy"] for f in FUSIONS if f in results}
    bars |= {name: results["prefix"][key] for name, key in
             (("text only", "text_only"), ("majority prior", "prior"))
             if results["prefix"].get(key)}
    width = 0.8 / len(bars)
    for i, (name, accuracy) in enumerate(bars.items()):
        axes.bar([k + i * width for k in range(len(kinds))],
                 [accuracy.get(kind, 0.0) for kind in kinds], width, label=name)
    axes.set_xticks([k + 0.4 - width / 2 for k in range(len(kinds))], kinds)
    axes.set(ylabel="exact match", ylim=(0, 1), title="shapes VQA, equal training time")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, 1.3), ncols=5, fontsize="small")
    plots.save(figure, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("fusion-run"))
    parser.add_argument("--minutes", type=float, default=8.0, help="training time per fusion")
    parser.add_argument("--clip-epochs", type=int, default=4)
    parser.add_argument("--per-kind", type=int, default=60)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--report", action="store_true", help="only print the table and draw "
                        "the plot of --out/fusion.json")
    parser.add_argument("--only", choices=FUSIONS, help="train and score this one again, "
                        "keeping the others' results in --out/fusion.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        return summarize(json.loads((args.out / "fusion.json").read_text()), args.out)
    train_dir, val = splits(args.out, args.tiny)
    clip, llm = vision_model(args.out, train_dir, args.tiny, args.clip_epochs), llm_spec(args.tiny)
    saved = args.out / "fusion.json"
    results = json.loads(saved.read_text()) if args.only and saved.exists() else {}
    for fusion in [args.only] if args.only else FUSIONS:
        results[fusion] = train(fusion, args.out, train_dir, clip, llm, args.minutes, args.tiny)
        results[fusion] |= evaluate(fusion, args.out, val, train_dir, llm,
                                    2 if args.tiny else args.per_kind)
        saved.write_text(json.dumps(results, indent=2))
    results = {f: results[f] for f in FUSIONS if f in results}
    return summarize(results, args.out)


def summarize(results: dict, out: Path) -> dict:
    """The table, the JSON line and fusion.png from the results of the three variants."""
    plot(results, out / "fusion.png")
    base = results["prefix"]
    rows = [("fusion", "overall", "vs prefix", "halluc.", "steps", "train s", "params",
             "ctx/img", "tok/s")]
    for fusion, r in results.items():
        rows.append((fusion, f"{r['accuracy']['overall']:.3f}",
                     f"{r['accuracy']['overall'] - base['accuracy']['overall']:+.3f}",
                     f"{r['hallucination'].get('exists_yes_when_absent', float('nan')):.3f}",
                     r["steps"], f"{r['train_s']:.0f}", r["trained_parameters"],
                     r["context_per_image"], f"{r['answer_tokens_per_s']:.1f}"))
    for name, key in (("text only", "text_only"), ("majority prior", "prior")):
        if base.get(key):
            rows.append((name, f"{base[key]['overall']:.3f}", "", "", "", "", "", 0, ""))
    summary = {"results": results, "peak_rss_mb": peak_rss_mb()}
    report("fusions on shapes VQA (equal training time)", rows, summary)
    return summary


if __name__ == "__main__":
    main()

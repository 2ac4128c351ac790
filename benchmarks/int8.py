"""What int8 costs: retrieval recall and time of one model in torch fp32, ONNX Runtime fp32
and ONNX Runtime int8 (dynamic quantisation), on the same pairs, in one run.

    python benchmarks/int8.py --model CHECKPOINT --pairs VAL/pairs.parquet
    python benchmarks/int8.py --tiny              # seconds; what the test suite runs

Recall needs trained weights: a shapes CLIP from docs/finetune.md's recipe is one that can
be made here. Each runtime encodes every image and caption of the pairs (eval retrieval's
own code), so the seconds include decoding; ratios are to torch fp32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import report

from mmindex.eval.retrieval import evaluate_retrieval
from mmindex.models import exported
from mmindex.models.registry import load_encoder


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--pairs", type=Path)
    parser.add_argument("--tiny", action="store_true", help="test-tiny on 40 shapes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from mmindex.data.shapes import write_shapes

            write_shapes(Path(tmp) / "shapes", 40, seed=3, size=64)
            args.model, args.pairs = "test-tiny", Path(tmp) / "shapes" / "pairs.parquet"
        torch_model = load_encoder(args.model, "fp32")
        if exported.save(torch_model) is None and exported.load(
                torch_model.info.fingerprint) is None:
            raise SystemExit(f"{args.model} cannot be exported to ONNX")
        runs = {"torch fp32": torch_model,
                "onnx fp32": exported.load(torch_model.info.fingerprint, "fp32"),
                "onnx int8": exported.load(torch_model.info.fingerprint, "int8")}
        runs["onnx int8"].encode_texts(["warm"])  # quantise once, outside the timing
        reports = {name: evaluate_retrieval(encoder, args.pairs) for name, encoder in
                   runs.items()}
    base = reports["torch fp32"]
    rows = [("runtime", "T→I R@1", "T→I R@5", "I→T R@1", "matched T→I R@1", "s", "x torch")]
    summary: dict = {"model": args.model, "pairs": str(args.pairs), "images": base.n_images}
    for name, rep in reports.items():
        t2i, i2t = rep.metrics.strict.text_to_image, rep.metrics.strict.image_to_text
        matched = rep.metrics.matched.text_to_image.recall_at_1 if rep.metrics.matched \
            else float("nan")
        rows.append((name, f"{t2i.recall_at_1:.3f}", f"{t2i.recall_at_5:.3f}",
                     f"{i2t.recall_at_1:.3f}", f"{matched:.3f}", f"{rep.seconds:.1f}",
                     f"{rep.seconds / base.seconds:.2f}"))
        summary[name.replace(" ", "_")] = {"t2i_r1": t2i.recall_at_1, "t2i_r5": t2i.recall_at_5,
                                           "i2t_r1": i2t.recall_at_1, "matched_t2i_r1": matched,
                                           "seconds": rep.seconds}
    report(f"int8 ({args.model}, {base.n_images} images)", rows, summary)
    return summary


if __name__ == "__main__":
    main()

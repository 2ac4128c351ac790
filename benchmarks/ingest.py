"""Ingest throughput: mmindex against the loop a user would write from open_clip's README.

    python benchmarks/ingest.py                      # ViT-B-32, 16 x 12 MP + 16 x 2 MP + 16 web
    python benchmarks/ingest.py --tiny               # seconds; what the test suite runs

Both run in this process on the same files with the same thread count, timed end to end
(model load included in both, as a user waits for it). The baseline opens
each file with PIL, applies the model's preprocess, and encodes batches of 32 in fp32.
mmindex runs `ingest` (local executor) in fp32 and in bf16. Prints images/s, the ratios to
the baseline, and the decode/encode split of the baseline. Random weights cost the same
compute as trained ones, so no download is needed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import make_photo_set, report, timed

from mmindex import IngestConfig, ingest
from mmindex.models.registry import load_encoder


def readme_loop(paths: list[Path], spec: str, batch_size: int = 32) -> dict:
    """The open_clip README way: open, preprocess, stack, encode; no draft, no overlap."""
    times: dict = {}
    with timed(times, "load"):
        encoder = load_encoder(spec, "fp32")
    for start in range(0, len(paths), batch_size):
        with timed(times, "decode"):
            pixels = torch.stack([encoder.preprocess(Image.open(p).convert("RGB"))
                                  for p in paths[start:start + batch_size]])
        with timed(times, "encode"), torch.no_grad():
            encoder.model.encode_image(pixels)
    return {"seconds": sum(times.values()), **times}  # end to end, as mmindex is timed


def mmindex_ingest(paths: list[Path], spec: str, precision: str, workdir: Path) -> float:
    index_dir = Path(tempfile.mkdtemp(dir=workdir))
    summary = ingest(IngestConfig(roots=(paths[0].parent,), index_dir=index_dir, model=spec,
                                  executor="local", precision=precision))
    assert summary.added == len(paths), summary
    return summary.seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32:random")
    parser.add_argument("--counts", default="12mp=16,2mp=16,web=16")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--photos", type=Path, default=Path(tempfile.gettempdir()) / "mmindex-bench-photos")
    parser.add_argument("--tiny", action="store_true", help="test-tiny model, 6 web images")
    args = parser.parse_args(argv)
    if args.tiny:
        args.model, args.counts, args.photos = "test-tiny", "web=6", args.photos.with_name("mmindex-bench-tiny")
    torch.set_num_threads(args.threads)
    counts = {k: int(v) for k, v in (item.split("=") for item in args.counts.split(","))}
    paths = make_photo_set(args.photos, counts)
    n = len(paths)
    with tempfile.TemporaryDirectory() as workdir:
        baseline = readme_loop(paths, args.model)
        fp32 = mmindex_ingest(paths, args.model, "fp32", Path(workdir))
        bf16 = mmindex_ingest(paths, args.model, "bf16", Path(workdir))
    rates = {"baseline": n / baseline["seconds"], "mmindex_fp32": n / fp32, "mmindex_bf16": n / bf16}
    rows = [("run", "images/s", "x baseline")] + [
        (name, f"{rate:.1f}", f"{rate / rates['baseline']:.2f}") for name, rate in rates.items()]
    rows.append(("baseline decode share", f"{baseline['decode'] / baseline['seconds']:.0%}", ""))
    summary = {"model": args.model, "images": n, "threads": args.threads, **{
        f"{k}_images_per_s": round(v, 2) for k, v in rates.items()},
        "fp32_ratio": round(rates["mmindex_fp32"] / rates["baseline"], 2),
        "bf16_ratio": round(rates["mmindex_bf16"] / rates["baseline"], 2),
        "baseline_decode_s": round(baseline["decode"], 2),
        "baseline_encode_s": round(baseline["encode"], 2)}
    report(f"ingest ({args.model}, {n} photos: {args.counts})", rows, summary)
    return summary


if __name__ == "__main__":
    main()

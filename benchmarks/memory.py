"""Peak memory of an ingest must not grow with the corpus.

    python benchmarks/memory.py                      # 2k and 20k small images
    python benchmarks/memory.py --tiny               # 200 and 600; what the test suite runs

Each size runs in a fresh child process (peak RSS is per process) with the tiny test model,
so the figure is mmindex's own overhead (scan, plan, commit buffers, FAISS), not a model's
weights. The growth ratio compares the two peaks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import report

CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, {bench!r})
from common import peak_rss_mb
from mmindex import IngestConfig, ingest
summary = ingest(IngestConfig(roots=(Path({folder!r}),), index_dir=Path({index!r}),
                              model="test-tiny", executor="local"))
print(json.dumps({{"added": summary.added, "peak_rss_mb": peak_rss_mb()}}))
"""


def small_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        path = folder / f"{i // 1000:03d}" / f"img{i:06d}.png"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)


def peak_for(count: int, workdir: Path) -> dict:
    folder = workdir / f"images-{count}"
    small_images(folder, count)
    code = CHILD.format(bench=str(Path(__file__).parent), folder=str(folder),
                        index=str(workdir / f"index-{count}"))
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    sizes = [200, 600] if args.tiny else [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        peaks = {n: peak_for(n, Path(tmp)) for n in sizes}
    growth = peaks[sizes[-1]]["peak_rss_mb"] / peaks[sizes[0]]["peak_rss_mb"]
    rows = [("images", "peak RSS MB")] + [(n, f"{p['peak_rss_mb']:.0f}") for n, p in peaks.items()]
    summary = {"peaks_mb": {n: round(p["peak_rss_mb"], 1) for n, p in peaks.items()},
               "growth_ratio": round(growth, 3), "corpus_ratio": sizes[-1] / sizes[0]}
    report("memory (ingest peak RSS, test-tiny)", rows, summary)
    return summary


if __name__ == "__main__":
    main()

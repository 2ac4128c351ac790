"""Ray ingest at scale: throughput and the driver's peak memory, against the local loop.

    nice -n 10 python benchmarks/ray_ingest.py                       # 100k images
    nice -n 10 python benchmarks/ray_ingest.py --images 20000 --before /path/to/old/tree

A synthetic folder of small photo-like JPEGs (written once, reused) is ingested with the
tiny test model in fp32 through (a) the local in-process loop, (b) optionally the Ray path
of another source tree (`--before`: e.g. `git archive` of the commit before a change, "our
previous path"), and (c) this tree's Ray path. Each run is a fresh process, so its peak RSS
(VmHWM) is its own; Ray's worker processes are sampled apart (psutil, every 0.2 s). Prints
images/s and the driver's peak RSS as ratios against the local loop, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import photo_like, report

HERE = Path(__file__).resolve().parent.parent  # this source tree


def make_folder(folder: Path, images: int, size: int, per_folder: int = 1000) -> None:
    """`images` JPEGs of size x size in sub-folders of `per_folder` (written once)."""
    done = folder / f".complete-{images}-{size}"
    if done.exists():
        return
    for i in range(images):
        sub = folder / f"{i // per_folder:04d}"
        path = sub / f"{i:07d}.jpg"
        if not path.exists():
            sub.mkdir(parents=True, exist_ok=True)
            photo_like(size, size, i).save(path, quality=85)
    done.touch()


class RaySampler(threading.Thread):
    """Peak RSS of the Ray processes under this driver: each worker's, and all at once."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.me, self.stop = psutil.Process(), threading.Event()
        self.peak_sum = self.peak_one = 0.0
        self.workers = set()

    def run(self):
        import psutil

        while not self.stop.wait(0.2):
            total = 0.0
            for child in self.me.children(recursive=True):
                try:
                    rss = child.memory_info().rss / 2**20
                    name = child.name()
                except psutil.Error:
                    continue
                total += rss
                if name.startswith("ray::"):
                    self.workers.add(child.pid)
                    self.peak_one = max(self.peak_one, rss)
            self.peak_sum = max(self.peak_sum, total)


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, photos: Path, index_dir: Path) -> dict:
    """One ingest in this process (whose mmindex is the tree on PYTHONPATH)."""
    import mmindex
    from mmindex import IngestConfig, ingest
    from mmindex.testing import TINY

    sampler = RaySampler()
    sampler.start()
    executor = "local" if mode == "local" else "ray"
    encoding = {"peak_mb": 0.0}

    def progress(stage, done, total):  # the peak until the last image is committed
        if stage == "encoding images":
            encoding["peak_mb"] = vm_hwm_mb()

    summary = ingest(IngestConfig(roots=(photos,), index_dir=index_dir, model=TINY,
                                  precision="fp32", executor=executor), progress)
    sampler.stop.set()
    sampler.join()
    return {"mode": mode, "tree": str(Path(mmindex.__file__).parent.parent),
            "images": summary.added, "seconds": summary.seconds,
            "images_per_s": summary.added / summary.seconds, "driver_peak_mb": vm_hwm_mb(),
            "driver_peak_encoding_mb": encoding["peak_mb"],
            "ray_processes_peak_mb": sampler.peak_sum, "ray_worker_peak_mb": sampler.peak_one,
            "ray_workers": len(sampler.workers), "generation": summary.generation}


def run_child(mode: str, tree: Path, photos: Path, workdir: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(tree)}
    index_dir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=workdir))
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--photos", str(photos),
                          "--index", str(index_dir)], env=env, cwd=tree, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64, help="side of each JPEG, pixels")
    parser.add_argument("--photos", type=Path, default=None,
                        help="the folder (default: a temporary-dir folder per count and size)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another source tree whose Ray path is measured too")
    parser.add_argument("--modes", default="local,ray-before,ray",
                        help="which runs (local is the baseline of the ratios)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    photos = args.photos or Path(tempfile.gettempdir()) / f"mmindex-ray-{args.images}-{args.size}"
    if args.child:
        print(json.dumps(child(args.child, photos, args.index)))
        return {}
    started = time.monotonic()
    make_folder(photos, args.images, args.size)
    print(f"folder ready in {time.monotonic() - started:.0f} s: {photos}", flush=True)
    modes = args.modes.split(",")
    runs = [(m, t) for m, t in [("local", HERE), ("ray-before", args.before), ("ray", HERE)]
            if m in modes]
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        warm = Path(workdir) / "warm"  # the model's ONNX export is written once, untimed
        make_folder(warm, 8, args.size)
        for tree in {t for _, t in runs if t}:
            run_child("local", tree, warm, Path(workdir))
        for mode, tree in runs:
            if tree is None:
                continue
            results[mode] = run_child(mode, tree, photos, Path(workdir))
            print(json.dumps(results[mode]), flush=True)
    base = results.get("local") or next(iter(results.values()))
    rows = [("path", "images/s", "x local", "driver peak MB", "x local",
             "of which while encoding", "Ray processes peak MB", "largest worker MB")]
    for mode, r in results.items():
        rows.append((mode, f"{r['images_per_s']:.0f}", f"{r['images_per_s'] / base['images_per_s']:.2f}",
                     f"{r['driver_peak_mb']:.0f}", f"{r['driver_peak_mb'] / base['driver_peak_mb']:.2f}",
                     f"{r['driver_peak_encoding_mb']:.0f}",
                     f"{r['ray_processes_peak_mb']:.0f}", f"{r['ray_worker_peak_mb']:.0f}"))
    summary = {"images": args.images, "size": args.size, "cpus": os.cpu_count(),
               "load": os.getloadavg(), **{m: {k: round(v, 2) if isinstance(v, float) else v
                                               for k, v in r.items()} for m, r in results.items()}}
    assert all(r["images"] == args.images for r in results.values()), summary
    report(f"Ray ingest, {args.images} x {args.size}px JPEGs, test-tiny fp32", rows, summary)
    return summary


if __name__ == "__main__":
    main()

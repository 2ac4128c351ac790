"""Ingest and queries against a real peer (rclip) and our own previous path, in one run.

    python benchmarks/peer.py WORK                       # ViT-B-32, 48 JPEGs, 3 rounds
    python benchmarks/peer.py WORK --rclip /venv/bin/python   # with rclip 4.x in that Python
    python benchmarks/peer.py WORK --tiny                # seconds; what the test suite runs

Every tool runs on the same random ViT-B-32 weights (throughput does not depend on their
values), each as a whole process, rounds interleaved (tool order rotates per round) so a busy
machine slows all of them alike. Each process is measured by os.wait4 in a small launcher:
wall seconds, CPU seconds (user + system) and peak RSS. Ratios are to mmindex's default path.

- `mmindex`: `mmindex ingest` / `mmindex search`, the default runtime (ONNX Runtime; the
  model's export is made once before the rounds and its cost reported apart).
- `mmindex int8`: the same ingest with `--precision int8` (ONNX Runtime's quantised copy).
- `mmindex torch`: the same commands with MMINDEX_RUNTIME=torch: our previous path
  (torch, `auto` precision: bf16 on CPUs with native bf16, else fp32).
- `README loop`: open_clip's README loop in a process (ingest only).
- `rclip`: rclip given ONNX exports of the same weights in its data directory (its
  `visual.onnx` takes pixels, its `textual.onnx` 77 token ids) and its image size set to
  224 (it hard-codes 256), when `--rclip` names a Python where rclip is installed (it needs
  Python >= 3.12; `pip install --ignore-requires-python --no-deps rclip` and its
  dependencies ran here on 3.11).

Warm queries: one process per tool embeds and searches the same 20 queries, interleaved
rounds; median and p90 per query.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import make_photo_set, report

QUERIES = ["a red bicycle", "a dog on a beach", "mountains at sunset", "a cup of coffee",
           "a city street at night", "two people talking", "a cat asleep on a sofa",
           "snow on trees", "a plate of pasta", "an old car", "a child with a kite",
           "a harbour with boats", "a bookshelf", "a bridge over a river", "a birthday cake",
           "a laptop on a desk", "a field of flowers", "a train station", "a lighthouse",
           "a forest path"]
RCLIP_SIZE = 224


# Peak RSS must come from a process forked by a small one: Linux counts a forked child's
# memory high-water mark from before its exec, so a child of this (large) process would
# report this process's size. A stdlib-only launcher (-S: no site) runs each tool.
MEASURE = """
import json, os, subprocess, sys, time
start = time.perf_counter()
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"wall": time.perf_counter() - start, "cpu": usage.ru_utime + usage.ru_stime,
               "rss_mb": usage.ru_maxrss / 1024, "code": os.waitstatus_to_exitcode(status)}, out)
"""


def run_process(command: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Wall s, CPU s and peak RSS (MB) of one whole process, and what it printed."""
    with tempfile.NamedTemporaryFile(suffix=".json") as measured:
        done = subprocess.run([sys.executable, "-S", "-c", MEASURE, measured.name, *command],
                              env=env, cwd=cwd, capture_output=True, check=False)
        usage = json.loads(Path(measured.name).read_text() or "{}")
    if done.returncode != 0 or usage.get("code") != 0:
        raise RuntimeError(f"{command[:4]} failed: {done.stderr.decode()[-2000:]}")
    return {**{k: usage[k] for k in ("wall", "cpu", "rss_mb")}, "stdout": done.stdout.decode()}


# ---------------------------------------------------------------- the tools


def mmindex_env(work: Path, runtime: str) -> dict:
    return {**os.environ, "MMINDEX_CACHE": str(work / "cache"), "MMINDEX_RUNTIME": runtime}


def mmindex_ingest(work: Path, photos: Path, spec: str, runtime: str, index: Path,
                   precision: str = "auto") -> dict:
    shutil.rmtree(index, ignore_errors=True)
    return run_process([sys.executable, "-m", "mmindex.cli", "ingest", str(photos), "--index",
                        str(index), "--model", spec, "--executor", "local", "--json",
                        "--precision", precision], env=mmindex_env(work, runtime))


def mmindex_query(work: Path, index: Path, runtime: str) -> dict:
    return run_process([sys.executable, "-m", "mmindex.cli", "search", QUERIES[0], "--index",
                        str(index), "-k", "10", "--json"], env=mmindex_env(work, runtime))


def readme_ingest(photos: Path, spec: str) -> dict:
    loop = ("import sys, torch, open_clip; from pathlib import Path; from PIL import Image\n"
            "open_clip.add_model_config(sys.argv[3])  # mmindex's own (tiny) architectures\n"
            "arch = sys.argv[1].split(':')[0]\n"
            "model, _, preprocess = open_clip.create_model_and_transforms(arch)\n"
            "model.eval(); paths = sorted(Path(sys.argv[2]).glob('*.jpg'))\n"
            "for i in range(0, len(paths), 32):\n"
            "    batch = torch.stack([preprocess(Image.open(p)) for p in paths[i:i + 32]])\n"
            "    with torch.no_grad():\n"
            "        model.encode_image(batch)\n")
    from mmindex.models.registry import CONFIG_DIR

    return run_process([sys.executable, "-c", loop, spec, str(photos), str(CONFIG_DIR)])


def rclip_run(rclip_python: str, datadir: Path, photos: Path, *flags: str) -> dict:
    launch = (f"import rclip.utils.preprocess as p; p.IMAGE_SIZE = {RCLIP_SIZE}\n"
              "import sys; from rclip.main import main; sys.argv = ['rclip', *sys.argv[1:]]\n"
              "main()\n")
    return run_process([rclip_python, "-c", launch, *flags, "--top", "10", "--filepath-only",
                        QUERIES[0]], env={**os.environ, "RCLIP_DATADIR": str(datadir)},
                       cwd=photos)


def rclip_datadir(work: Path, spec: str) -> Path:
    """rclip's data directory holding ONNX exports of the same weights (made once)."""
    import torch

    from mmindex.models.registry import load_encoder

    datadir = work / "rclip-models"
    models = datadir / "ViT-B-32-256-datacomp_s34b_b86k"
    if (models / "textual.onnx").is_file():
        return datadir
    models.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder(spec, "fp32")
    side = encoder.info.image_size
    for name, module, example in (
            ("visual", _Tower(encoder.model, "encode_image"), torch.zeros(2, 3, side, side)),
            ("textual", _Tower(encoder.model, "encode_text"), encoder.tokenizer(["a", "b"]))):
        torch.onnx.export(module.eval(), (example,), str(models / f"{name}.onnx"),
                          input_names=["input"], output_names=["output"], dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
    (datadir / "tokenizer").mkdir(exist_ok=True)
    import open_clip

    vocab = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    shutil.copy(vocab, datadir / "tokenizer" / vocab.name)
    for legal in ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md"):
        (datadir / legal).write_text("benchmark stand-in\n")
    return datadir


def _Tower(model, method: str):
    """One of open_clip's encode_* methods as a module of its own, for export."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, inputs):
            return getattr(self.model, method)(inputs)

    return Tower()


# ---------------------------------------------------------------- warm queries


WARM_MMINDEX = """
import json, sys, time
from mmindex import open_index
index = open_index(sys.argv[1]); queries = json.loads(sys.argv[2])
index.search(queries[0], k=10)
times = []
for _ in range(int(sys.argv[3])):
    for q in queries:
        t = time.perf_counter(); index.search(q, k=10); times.append(time.perf_counter() - t)
print(json.dumps(times))
"""

WARM_RCLIP = f"""
import json, sys, time
import rclip.utils.preprocess as p; p.IMAGE_SIZE = {RCLIP_SIZE}
from rclip.main import init_rclip
rclip, _, db = init_rclip(sys.argv[1], 8, None, no_indexing=True)
queries = json.loads(sys.argv[2]); rclip.search(queries[0], sys.argv[1], 10)
times = []
for _ in range(int(sys.argv[3])):
    for q in queries:
        t = time.perf_counter(); rclip.search(q, sys.argv[1], 10); times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def warm(tool: str, work: Path, index: Path, photos: Path, rclip_python: str | None,
         repeats: int) -> list[float]:
    if tool == "rclip":
        out = run_process([rclip_python, "-c", WARM_RCLIP, str(photos), json.dumps(QUERIES),
                           str(repeats)], env={**os.environ,
                                               "RCLIP_DATADIR": str(work / "rclip-models")},
                          cwd=photos)
    else:
        runtime = "torch" if tool == "mmindex torch" else "auto"
        out = run_process([sys.executable, "-c", WARM_MMINDEX, str(index), json.dumps(QUERIES),
                           str(repeats)], env=mmindex_env(work, runtime))
    return json.loads(out["stdout"].strip().splitlines()[-1])


# ---------------------------------------------------------------- the run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--model", default="ViT-B-32:random")
    parser.add_argument("--counts", default="12mp=16,2mp=16,web=16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rclip", help="a Python interpreter with rclip installed")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, 6 web images")
    args = parser.parse_args(argv)
    if args.tiny:
        args.model, args.counts, args.rounds, args.rclip = "mmindex-tiny:random", "web=6", 1, None
    work = args.work.resolve()
    photos = work / "photos"
    counts = {k: int(v) for k, v in (item.split("=") for item in args.counts.split(","))}
    n = len(make_photo_set(photos, counts))
    index = {"mmindex": work / "idx-onnx", "mmindex torch": work / "idx-torch",
             "mmindex int8": work / "idx-int8"}

    export = mmindex_ingest(work, photos, args.model, "auto", index["mmindex"])  # exports once
    mmindex_ingest(work, photos, args.model, "auto", index["mmindex int8"], "int8")  # quantises
    tools = ["mmindex", "mmindex int8", "mmindex torch", "README loop"] + (
        ["rclip"] if args.rclip else [])
    if args.rclip:
        rclip_datadir(work, args.model)
    ingests: dict[str, list[dict]] = {t: [] for t in tools}
    colds: dict[str, list[dict]] = {t: [] for t in tools if t not in ("README loop",
                                                                      "mmindex int8")}
    for round_ in range(args.rounds):
        order = tools[round_ % len(tools):] + tools[:round_ % len(tools)]
        for tool in order:
            ingests[tool].append(ingest_once(tool, work, photos, args, index))
        for tool in [t for t in order if t in colds]:
            colds[tool].append(query_once(tool, work, photos, args, index))
    warms = {t: [] for t in colds}
    for round_ in range(args.rounds):
        for tool in list(warms)[round_ % len(warms):] + list(warms)[:round_ % len(warms)]:
            warms[tool] += warm(tool, work, index.get(tool, index["mmindex"]), photos, args.rclip,
                                repeats=1 if args.tiny else 2)
    return summarise(args, n, export, ingests, colds, warms)


def ingest_once(tool, work, photos, args, index) -> dict:
    if tool == "README loop":
        return readme_ingest(photos, args.model)
    if tool == "rclip":
        (work / "rclip-models" / "db.sqlite3").unlink(missing_ok=True)
        return rclip_run(args.rclip, work / "rclip-models", photos)
    runtime = "torch" if tool == "mmindex torch" else "auto"
    precision = "int8" if tool == "mmindex int8" else "auto"
    return mmindex_ingest(work, photos, args.model, runtime, index[tool], precision)


def query_once(tool, work, photos, args, index) -> dict:
    if tool == "rclip":
        return rclip_run(args.rclip, work / "rclip-models", photos, "--no-indexing")
    runtime = "torch" if tool == "mmindex torch" else "auto"
    return mmindex_query(work, index[tool], runtime)


def summarise(args, n, export, ingests, colds, warms) -> dict:
    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    base = {key: med(ingests["mmindex"], key) for key in ("wall", "cpu", "rss_mb")}
    rows = [("ingest (whole process)", "wall s", "x mmindex", "CPU s", "peak MB")]
    summary: dict = {"model": args.model, "images": n, "rounds": args.rounds,
                     "first_ingest_with_export_s": round(export["wall"], 2)}
    for tool, runs in ingests.items():
        wall = med(runs, "wall")
        rows.append((tool, f"{wall:.2f}", f"{wall / base['wall']:.2f}",
                     f"{med(runs, 'cpu'):.1f}", f"{med(runs, 'rss_mb'):.0f}"))
        summary[f"ingest_{_key(tool)}"] = {"wall_s": round(wall, 3), "cpu_s": round(
            med(runs, "cpu"), 2), "peak_mb": round(med(runs, "rss_mb")), "vs_mmindex": round(
            wall / base["wall"], 3)}
    cold_base = med(colds["mmindex"], "wall")
    rows.append(("cold query (whole process)", "wall s", "x mmindex", "CPU s", "peak MB"))
    for tool, runs in colds.items():
        wall = med(runs, "wall")
        rows.append((tool, f"{wall:.2f}", f"{wall / cold_base:.2f}", f"{med(runs, 'cpu'):.1f}",
                     f"{med(runs, 'rss_mb'):.0f}"))
        summary[f"cold_{_key(tool)}"] = {"wall_s": round(wall, 3), "cpu_s": round(
            med(runs, "cpu"), 2), "peak_mb": round(med(runs, "rss_mb")),
            "vs_mmindex": round(wall / cold_base, 3)}
    warm_base = statistics.median(warms["mmindex"])
    rows.append(("warm query", "median ms", "x mmindex", "p90 ms", ""))
    for tool, times in warms.items():
        p50, p90 = statistics.median(times), sorted(times)[int(0.9 * (len(times) - 1))]
        rows.append((tool, f"{p50 * 1e3:.1f}", f"{p50 / warm_base:.2f}", f"{p90 * 1e3:.1f}", ""))
        summary[f"warm_{_key(tool)}"] = {"median_ms": round(p50 * 1e3, 2),
                                         "p90_ms": round(p90 * 1e3, 2),
                                         "vs_mmindex": round(p50 / warm_base, 3)}
    report(f"against a peer ({args.model}, {n} photos: {args.counts}, "
           f"{args.rounds} interleaved rounds)", rows, summary)
    return summary


def _key(tool: str) -> str:
    return tool.lower().replace(" ", "_")


if __name__ == "__main__":
    main()

"""Small objects in large images (issue 24): one vector per image against tiles, tiles +
re-rank and the re-rank alone, at several tile budgets; not part of the test suite.

    mmindex make-shapes canvas --n 300 --seed 7 --size 96 --canvas 512
    python benchmarks/tiles.py MODEL canvas WORK [--budgets 4,9,16,25,49] [--rerank 20]

For each budget it ingests the canvases into a fresh index with `--tiles BUDGET` (budget 0:
no tiles), then searches every caption. A hit is right when its image holds exactly the
caption's objects (attribute-matched, as `eval retrieval` counts: repeated single-object
scenes are not held against the model). It prints one JSON line per (budget, mode) and
writes WORK/tiles.json and WORK/tiles.png (recall@1 against the budget). Times are
seconds on this machine (ingest: the whole ingest, tiles pass included, in wall time and in
the process's CPU time, which other jobs' load sways less; query: the mean search of one
embedded caption, embedding excluded, reported apart).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mmindex.data.shapes import objects_key, parse_attributes
from mmindex.data.tiles import TileSpec
from mmindex.ingestion.config import IngestConfig
from mmindex.ingestion.run import ingest
from mmindex.search.searcher import Index

MODES = {  # name: (tiles, rerank) given to Index.search
    "one vector": (False, 0),
    "rerank only": (False, None),
    "tiles": (True, 0),
    "tiles + rerank": (True, None),
}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("split", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--budgets", default="0,4,9,16,25,49")
    parser.add_argument("--rerank", type=int, default=20)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--control", type=Path, help="tiles.json of the same scenes without a "
                        "canvas (budget 0): drawn as the ceiling")
    parser.add_argument("--plot-only", action="store_true", help="redraw WORK/tiles.png")
    args = parser.parse_args(argv)
    control = json.loads(args.control.read_text())[0] if args.control else None
    if args.plot_only:
        results = json.loads((args.work / "tiles.json").read_text())
        plot(results, args.work / "tiles.png", control)
        return results
    pairs = pq.read_table(args.split / "pairs.parquet").to_pylist()
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for budget in (int(b) for b in args.budgets.split(",")):
        results += measure(args, pairs, budget)
    (args.work / "tiles.json").write_text(json.dumps(results, indent=1))
    plot(results, args.work / "tiles.png", control)
    return results


def measure(args, pairs: list[dict], budget: int) -> list[dict]:
    root = args.work / f"idx-{budget}"
    shutil.rmtree(root, ignore_errors=True)
    tiles = TileSpec(budget, args.overlap) if budget else None
    config = IngestConfig(roots=(args.split / "images",), index_dir=root, model=args.model,
                          executor="local", tiles=tiles)
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = ingest(config)
    ingest_s = time.perf_counter() - started
    ingest_cpu_s = time.process_time() - cpu_started  # every thread's: less swayed by load
    index = Index(root)
    truth = {str((args.split / p["image"]).resolve()): objects_key(parse_attributes(
        p["attributes"])) for p in pairs}
    started = time.perf_counter()
    queries = [index.embed_text(p["caption"]) for p in pairs]
    embed_ms = (time.perf_counter() - started) / len(pairs) * 1000
    keys = [objects_key(parse_attributes(p["attributes"])) for p in pairs]
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    out = []
    for mode, (use_tiles, rerank) in MODES.items():
        if budget == 0 and use_tiles:
            continue
        depth = args.rerank if rerank is None else 0
        if budget == 0 and depth:
            continue
        ranks, started = [], time.perf_counter()
        for vector, key in zip(queries, keys):
            hits = index.search(vector=vector, k=5, tiles=use_tiles, rerank=depth)
            ranks.append(next((i for i, h in enumerate(hits)
                               if truth[str(Path(h.path).resolve())] == key), 99))
        query_ms = (time.perf_counter() - started) / len(queries) * 1000
        ranks = np.array(ranks)
        row = {"budget": budget, "mode": mode, "recall@1": round(float((ranks < 1).mean()), 3),
               "recall@5": round(float((ranks < 5).mean()), 3),
               "tiles": summary.tiles.encoded if summary.tiles else 0,
               "index_mb": round(size / 1e6, 2), "ingest_s": round(ingest_s, 1),
               "ingest_cpu_s": round(ingest_cpu_s, 1),
               "query_ms": round(query_ms, 2), "embed_ms": round(embed_ms, 2),
               "images": len(pairs), "rerank": depth}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def plot(results: list[dict], path: Path, control: dict | None = None) -> None:
    from mmindex.core.plots import figure, save

    fig, axes = figure(columns=2, size=(9.0, 3.6))
    one = [r for r in results if r["mode"] == "one vector"]
    for ax, metric in zip(axes, ("recall@1", "recall@5")):
        for mode, style in (("tiles", "o-"), ("tiles + rerank", "s--"), ("rerank only", "^:")):
            rows = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["budget"])
            if rows:
                ax.plot([r["budget"] for r in rows], [r[metric] for r in rows], style,
                        label=mode)
        if one:
            ax.axhline(one[0][metric], color="grey", linestyle="-.", label="one vector")
        if control:
            ax.axhline(control[metric], color="black", linestyle=":",
                       label="the scenes alone at 96 px")
        ax.set_xlabel("tile budget (tiles per image)")
        ax.set_ylabel(f"text→image {metric}")
        ax.set_ylim(0, 1.05)
    axes[0].legend(loc="center right", fontsize=8)
    fig.suptitle("small objects (2-5 % of the side) in 512 px canvases")
    save(fig, path)


if __name__ == "__main__":
    main()

"""Commands over one index: ingest, search, info, models, doctor, serve."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer

from mmindex.cli.app import (
    DeviceOption,
    GeneratorOption,
    IndexOption,
    JsonOption,
    app,
    config_option,
    fail_cleanly,
    print_json,
    progress_reporter,
    resolve_index_dir,
)
from mmindex.ingestion.config import IngestConfig


@app.command()
@fail_cleanly
def ingest(
    paths: list[Path] = typer.Argument(
        ..., help="Folders or files: images, PDFs and text corpora"),
    index: Path | None = IndexOption,
    model: str | None = config_option(
        IngestConfig,
        "model",
        "--model",
        help="Model spec (see `mmindex models`); default: the index's, else CLIP or starter",
    ),
    executor: str = config_option(
        IngestConfig, "executor", "--executor", help="local | ray | auto"
    ),
    ray_address: str | None = config_option(
        IngestConfig, "ray_address", "--ray-address", help="Existing Ray cluster (implies Ray)"
    ),
    batch_size: int = config_option(IngestConfig, "batch_size", "--batch-size", min=1),
    commit_every: int = config_option(
        IngestConfig,
        "commit_every",
        "--commit-every",
        min=1,
        help="Rows per commit: a killed ingest loses at most this many (a large collection "
        "raises it, so each commit writes fewer, larger shards)",
    ),
    max_pixels: int = config_option(
        IngestConfig, "max_pixels", "--max-pixels", help="Refuse larger images (bomb guard)"
    ),
    pdf_dpi: float | None = config_option(
        IngestConfig, "pdf_dpi", "--pdf-dpi", min=1, max=1200,
        help="Render PDF pages at this DPI (default: the short side at twice the model's "
        "input side)"),
    max_pdf_pages: int = config_option(
        IngestConfig, "max_pdf_pages", "--max-pdf-pages", min=1,
        help="A PDF with more pages goes to errors"),
    precision: str = config_option(
        IngestConfig,
        "precision",
        "--precision",
        help="auto | fp32 | bf16 | int8 (auto: ONNX Runtime in fp32 on the CPU, bf16 on a GPU "
        "that has it; bf16 runs in torch; int8: ONNX Runtime's quantised model)",
    ),
    device: str = DeviceOption,
    actors: int = config_option(
        IngestConfig,
        "actors",
        "--actors",
        min=1,
        help="Ray encoder actors (a cluster: one per GPU, or per share of CPUs)",
    ),
    actor_cpus: int = config_option(
        IngestConfig,
        "actor_cpus",
        "--actor-cpus",
        min=0,
        help="CPUs each Ray actor holds and uses (0: holds 1, uses every core of its node)",
    ),
    decode_threads: int = config_option(
        IngestConfig,
        "decode_threads",
        "--decode-threads",
        min=1,
        help="Image decoding threads of the local loop (on Ray, decode tasks use free CPUs)",
    ),
    tiles: str | None = typer.Option(
        None, "--tiles", help="Also index large images as overlapping tiles, at most this many "
        "per image (the token budget, 1-256); 'off' removes them. The index remembers it"),
    tile_overlap: float = typer.Option(
        0.25, "--tile-overlap", help="Least fraction of a tile its neighbour overlaps"),
    tile_min_side: int = typer.Option(
        0, "--tile-min-side", min=0, help="Smallest tile side in pixels (0: the model's input)"),
    as_json: bool = JsonOption,
):
    """Index images, PDFs (each page an image, its text layer passages) and texts;
    re-running encodes only new or changed files."""
    from mmindex.data.tiles import parse_tile_spec
    from mmindex.ingestion.run import ingest as run_ingest

    config = IngestConfig(
        roots=tuple(paths),
        index_dir=resolve_index_dir(index),
        model=model,
        executor=executor,
        ray_address=ray_address,
        batch_size=batch_size,
        commit_every=commit_every,
        precision=precision,
        device=device,
        actors=actors,
        actor_cpus=actor_cpus,
        decode_threads=decode_threads,
        max_pixels=max_pixels,
        pdf_dpi=pdf_dpi,
        max_pdf_pages=max_pdf_pages,
        tiles=tiles if tiles in (None, "off") else parse_tile_spec(tiles, tile_overlap,
                                                                    tile_min_side),
    )
    with progress_reporter(enabled=not as_json) as progress:
        summary = run_ingest(config, progress)
    if as_json:
        print_json(summary.to_dict())
        return
    _print_ingest_summary(summary, config.index_dir)


def _print_ingest_summary(summary, index_dir: Path) -> None:
    typer.echo(
        f"{summary.added} added, {summary.updated} updated, {summary.removed} removed, "
        f"{summary.unchanged} unchanged, {summary.failed} failed "
        f"in {summary.seconds:.1f}s ({summary.executor}) -> {index_dir}"
    )
    for error in summary.errors:
        typer.secho(f"  skipped {error.path}: {error.reason}", err=True, fg="yellow")
    t = summary.tiles
    if t and (t.images or t.removed or t.failed):
        typer.echo(f"tiles: {t.images} images tiled ({t.encoded} tiles encoded, {t.copied} "
                   f"copied), {t.removed} stale tiles removed, {t.failed} images unreadable")
    for path in summary.texts_beside_images:
        typer.echo(f"  not indexed as a text (it sits beside photos; name it to index it): "
                   f"{path}", err=True)


@app.command()
@fail_cleanly
def watch(
    paths: list[Path] = typer.Argument(..., help="Folders or files to keep indexed"),
    index: Path | None = IndexOption,
    model: str | None = config_option(
        IngestConfig, "model", "--model", help="Model spec, for a new index (as ingest)"),
    settle: float = typer.Option(
        2.0, "--settle", min=0.0, help="Seconds without a file event before ingesting"),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per ingest"),
):
    """Ingest, then keep the index current as files are added, changed, moved and deleted
    (each burst of changes is one incremental ingest). Ctrl-C stops."""
    import json
    import threading

    from mmindex.ingestion.watch import watch as run_watch

    config = IngestConfig(roots=tuple(paths), index_dir=resolve_index_dir(index), model=model)

    def report(summary) -> None:
        if as_json:  # JSON Lines: one object per ingest, read as they come
            typer.echo(json.dumps(summary.to_dict()))
        else:
            _print_ingest_summary(summary, config.index_dir)

    def warn(error) -> None:
        typer.secho(f"ingest failed, still watching: {error}", err=True, fg="yellow")

    if not as_json:
        typer.echo(f"watching {', '.join(map(str, paths))} (Ctrl-C stops)", err=True)
    _stop_on_ctrl_c_and_sigterm()
    try:
        run_watch(config, threading.Event(), on_ingest=report, on_error=warn, settle_s=settle)
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)


def _stop_on_ctrl_c_and_sigterm() -> None:
    """Ctrl-C and SIGTERM (a service manager's stop) both end a watch as Ctrl-C does,
    whatever the process inherited: a background job of a script starts with SIGINT
    ignored, and Python then never raises KeyboardInterrupt (the watch ran on)."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@app.command()
@fail_cleanly
def search(
    query: str | None = typer.Argument(
        None, help="Text to search for; +word / -word (or +\"a phrase\") add or take away: "
        "\"beach +sunset -people\""),
    image: Path | None = typer.Option(None, "--image", help="Search by this image instead"),
    plus: list[str] = typer.Option(
        [], "--plus", help="Add a text, or an image given by its file path (repeatable): "
        "--image a.jpg --plus \"at night\""),
    minus: list[str] = typer.Option(
        [], "--minus", help="Take away a text, or an image given by its file path (repeatable)"),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Number of results"),
    target: str = typer.Option("images", "--target", help="images | texts"),
    where: str | None = typer.Option(
        None,
        "--where",
        help="SQL predicate on metadata, e.g. \"width > 1000 AND path LIKE '%/2024/%'\" or "
        "\"taken >= '2024-06-01' AND camera LIKE '%Pixel%'\" (images: path, size, mtime_ns, "
        "width, height, format, taken, camera, lens, latitude, longitude)",
    ),
    min_score: float | None = typer.Option(
        None, "--min-score", help="Leave out results scoring below this (cosine similarity)"
    ),
    sort: str | None = typer.Option(
        None, "--sort", help="Order the k results by a column: 'taken' oldest first, '-taken' "
        "newest first (unknown last); default: by score",
    ),
    mode: str | None = typer.Option(
        None, "--mode", help="vector | lexical (BM25 over the texts; images: over each "
        "page's text layer) | hybrid (both, by reciprocal rank fusion). Default: hybrid for "
        "a text query over texts (unless --min-score), else vector"),
    tiles: bool | None = typer.Option(
        None, "--tiles/--no-tiles", help="Search the images' tile vectors too (default: when "
        "the index has them); a hit found by a tile shows its box"),
    rerank: int = typer.Option(
        0, "--rerank", min=0, help="Re-score this many top images by MaxSim over their tiles"),
    heatmap: Path | None = typer.Option(
        None, "--heatmap", help="Write each image hit with the query's heatmap over it (PNG) "
        "into this folder"),
    index: Path | None = IndexOption,
    as_json: bool = JsonOption,
):
    """Search the index by text or by image, or by texts and images added and taken away."""
    from mmindex.search.searcher import open_index

    added, taken_away = _terms(plus), _terms(minus)
    texts_only = image is None and not any(isinstance(t, Path) for t in added + taken_away)
    opened = open_index(resolve_index_dir(index))
    with _one_thread(enabled=texts_only):
        hits = opened.search(
            query, image=image, plus=added, minus=taken_away, k=k, target=target,
            where=where, min_score=min_score, sort=sort, mode=mode, tiles=tiles,
            rerank=rerank,
        )
    if heatmap is not None:
        from mmindex.search.tiles import write_heatmaps

        vector = opened.query_vector(query, image=image, plus=added, minus=taken_away)
        for path in write_heatmaps(opened, hits, vector, heatmap):
            typer.echo(f"heatmap {path}", err=True)
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    _print_hits(hits)


def _terms(values: list[str]) -> list[str | Path]:
    """--plus/--minus values: the path of an existing file is an image, anything else text."""
    return [Path(v) if Path(v).expanduser().is_file() else v for v in values]


@contextlib.contextmanager
def _one_thread(enabled: bool):
    """One short text query gains nothing from a second thread, and on a busy machine the
    threads wait for each other: "a cat" took 2 s on 2 threads, 0.07 s on 1 (load ~6).
    Set here, at the edge, for this one query (ONNX Runtime reads MMINDEX_THREADS when it
    opens the graph; a model without an export runs in torch on every core, since importing
    torch here would cost the cold search a second); restored for whoever called."""
    previous = os.environ.get("MMINDEX_THREADS")
    if enabled:
        os.environ["MMINDEX_THREADS"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MMINDEX_THREADS", None)
        else:
            os.environ["MMINDEX_THREADS"] = previous


def _print_hits(hits) -> None:
    from rich.console import Console
    from rich.table import Table

    if not hits:
        typer.echo("no results")
        return
    dated = any(hit.taken for hit in hits)  # a photo library: when, and with what
    table = Table("rank", "score", *(("taken", "camera") if dated else ()))
    table.add_column("path" if hits[0].table == "images" else "text", overflow="fold")
    for hit in hits:
        shown = hit.label if hit.table == "images" else f"{(hit.text or '')[:80]}  ({hit.label})"
        if hit.box:
            shown += "  (tile {}, {} - {}, {})".format(*hit.box)
        when = ((hit.taken or "").replace("T", " ")[:16], hit.camera or "") if dated else ()
        table.add_row(str(hit.rank), f"{hit.score:.3f}", *when, shown)
    Console().print(table)


@app.command()
@fail_cleanly
def duplicates(
    threshold: float | None = typer.Option(
        None, "--threshold", help="Cosine similarity at or above which two images are near "
        "duplicates (resized, re-encoded copies); default 0.95; 1 keeps only identical files"),
    index: Path | None = IndexOption,
    as_json: bool = JsonOption,
):
    """Groups of identical files (same SHA-256) and near-identical images, with sizes."""
    from mmindex.search.duplicates import find_duplicates
    from mmindex.search.searcher import open_index

    index_ = open_index(resolve_index_dir(index))
    report = find_duplicates(index_, *([threshold] if threshold is not None else []))
    if as_json:
        print_json(report.to_dict())
        return
    if not report.groups:
        typer.echo(f"no duplicates among {report.images} images (threshold "
                   f"{report.threshold:g})")
    for group in report.groups:
        extra = (f", {group.reclaimable_bytes} bytes in the extra copies"
                 if group.kind == "identical" else f", similarity >= {group.similarity:.4f}")
        typer.echo(f"{group.kind}: {len(group.files)} files{extra}")
        for f in group.files:
            size = f" {f.width}x{f.height}" if f.width else ""
            typer.echo(f"  {f.path}  ({f.size} bytes{size})")


@app.command()
@fail_cleanly
def info(index: Path | None = IndexOption, as_json: bool = JsonOption):
    """Show the index's model, row counts, sizes and errors."""
    from mmindex.search.searcher import open_index

    details = open_index(resolve_index_dir(index)).info()
    if as_json:
        print_json(details.to_dict())
        return
    typer.echo(f"index      {details.root} (generation {details.generation})")
    typer.echo(f"model      {details.model} (dim {details.dim}, weights {details.fingerprint})")
    for name, table in details.tables.items():
        kind = f", {table.index_kind} index" if table.index_kind else ""
        typer.echo(
            f"{name:<10} {table.rows} rows in {table.shards} shards, "
            f"{table.bytes / 1e6:.1f} MB{kind}"
        )
    for error in details.errors:
        typer.echo(f"  error    {error['path']}: {error['reason']}")


@app.command()
@fail_cleanly
def models(
    show_all: bool = typer.Option(False, "--all", help="Also list every pretrained tag that "
                                  "needs the internet once"),
    as_json: bool = JsonOption,
):
    """List what --model can name: what works here now first."""
    from mmindex.models.registry import DEFAULT_CLIP, list_models

    entries = list_models()
    if as_json:
        print_json([{"spec": e.spec, "description": e.description, "available": e.available}
                    for e in entries])
        return
    here = [e for e in entries if e.available]
    online = [e for e in entries if not e.available]
    typer.echo("Works here now:")
    for entry in here:
        typer.echo(f"  {entry.spec:<43} {entry.description}")
    shown = online if show_all else [e for e in online if e.spec == DEFAULT_CLIP]
    typer.echo(f"\nNeeds the internet once ({len(online)}"
               + ("" if show_all else "; `mmindex models --all` lists them") + "):")
    for entry in shown:
        typer.echo(f"  {entry.spec:<43} {entry.description}")


@app.command()
@fail_cleanly
def serve(
    index: Path | None = IndexOption,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; loopback keeps the collection to this machine"
    ),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="MMINDEX_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' on /api",
    ),
    ingest_roots: list[Path] = typer.Option(
        [], "--ingest-root", help="A folder that POST /api/ingest may index (repeatable)"
    ),
    device: str = DeviceOption,  # the model that answers /api/ask
    generator_spec: str | None = GeneratorOption,
    watch_roots: list[Path] = typer.Option(
        [], "--watch", help="A folder or file to keep indexed while serving, as `mmindex watch` "
        "does (repeatable)"
    ),
):
    """Serve the HTTP API (/openapi.json) and the web page (needs the `serve` extra)."""
    from mmindex.models.registry import check_device
    from mmindex.serve.run import serve as run_server

    check_device(device)  # now, not at the first question
    run_server(
        resolve_index_dir(index),
        host=host,
        port=port,
        token=token,
        ingest_roots=tuple(ingest_roots),
        device=device,
        generator=generator_spec,
        watch_roots=tuple(watch_roots),
    )


@app.command()
@fail_cleanly
def doctor(
    index: Path | None = IndexOption,
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Rebuild what can be rebuilt (FAISS "
        "from stored embeddings, the manifest from the shards)",
    ),
    model: str | None = typer.Option(
        None, "--model", help="The index's model, if no shard records it (manifest rebuild only)"
    ),
    as_json: bool = JsonOption,
):
    """Check an index for damage; --repair fixes it without re-encoding."""
    from mmindex.index.doctor import check_index, repair_index

    index_dir = resolve_index_dir(index)
    report = repair_index(index_dir, model) if repair else check_index(index_dir)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_doctor(report)
    if not report.healthy:
        raise typer.Exit(4)


def _print_doctor(report) -> None:
    generation = "unreadable" if report.generation is None else report.generation
    typer.echo(f"index      {report.root} (generation {generation})")
    for finding in report.findings:
        fix = f"  [--repair: {finding.repair}]" if finding.repair else ""
        typer.secho(
            f"  {finding.severity:<8} {finding.subject}: {finding.problem}{fix}",
            fg="red" if finding.severity == "error" else "yellow",
        )
    for action in report.repaired:
        typer.echo(f"  repaired {action}")
    typer.echo("healthy" if report.healthy else "damaged: run `mmindex doctor --repair`")

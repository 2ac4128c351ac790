"""scan -> plan -> decode/encode (local loop or Ray) -> commit, in chunks a crash can resume."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmindex.core.progress import Progress, no_progress
from mmindex.data.images import DecodeError
from mmindex.data.pages import PDF_EXTENSIONS, is_pdf, page_item, page_key
from mmindex.data.pdf import page_count, page_texts
from mmindex.data.scan import (
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    TEXT_EXTENSIONS,
    CorpusError,
    TextDocument,
    read_text_documents,
    split_texts_beside_images,
    text_sha256,
    walk_files,
)
from mmindex.errors import (
    IndexWriteError,
    ModelMismatchError,
    UserInputError,
)
from mmindex.index import storage, store
from mmindex.index.changes import FILE_COLUMNS, Candidate, ChangePlan, errors_for, plan_changes
from mmindex.index.schema import FILE_SCHEMA
from mmindex.index.storage import index_root
from mmindex.index.vectors import unit_vectors
from mmindex.ingestion.commits import CommitBuffer
from mmindex.ingestion.config import IngestConfig
from mmindex.ingestion.encoders import (
    PHOTO_COLUMNS,
    ImageBatchEncoder,
    TextBatchEncoder,
    image_columns,
)
from mmindex.ingestion.tiles import TilesSummary, update_tiles
from mmindex.models.registry import (
    canonical_spec,
    check_device,
    default_model_spec,
    load_for_inference,
)


@dataclass(frozen=True)
class FileError:
    path: str
    reason: str


@dataclass(frozen=True)
class IngestSummary:
    added: int  # files new to the index
    updated: int  # files whose content or stat changed
    removed: int  # files gone from disk
    unchanged: int
    failed: int  # files that could not be decoded or parsed in this run
    documents: int  # text documents written in this run (a PDF's text layer: one a page)
    seconds: float
    model: str
    executor: str  # "local", "ray" or "none" (nothing to encode)
    generation: int
    errors: tuple[FileError, ...] = ()
    # text files not indexed because they sit beside photos (data/scan.py says why)
    texts_beside_images: tuple[str, ...] = ()
    tiles: TilesSummary | None = None  # the tiles pass, when the index tiles its images

    def to_dict(self) -> dict:
        return asdict(self)


def ingest(config: IngestConfig, progress: Progress | None = None) -> IngestSummary:
    started = time.monotonic()
    roots = _check_roots(config.roots)
    check_device(config.device)  # before the lock and the scan: a wrong flag fails at once
    with store.StoreWriter(index_root(config.index_dir)) as writer:
        spec = _resolve_spec(config.model, writer.manifest)
        run = _IngestRun(config, writer, spec, progress or no_progress)
        run.plan([str(r) for r in roots])
        run.process_images()
        run.process_texts()
        run.finish()
        c = config
        tiles = update_tiles(writer, c.tiles, lambda: run.encoder, run.progress, c.batch_size,
                             c.commit_every, c.max_pixels, c.commit_seconds,
                             c.pdf_dpi)  # after the images
        # after the tiles pass: the summary's generation is the one its commits left
        return replace(run.summary(time.monotonic() - started), tiles=tiles)


def _check_roots(roots) -> list[Path]:
    if not roots:
        raise UserInputError("nothing to ingest: give one or more folders or files")
    resolved = [Path(r).expanduser().absolute() for r in roots]
    missing = [str(r) for r in resolved if not r.exists()]
    if missing:
        raise UserInputError(f"no such file or folder: {', '.join(missing)}")
    return resolved


def _resolve_spec(requested: str | None, manifest: store.Manifest | None) -> str:
    """An existing index keeps its model; asking for another is refused, naming both."""
    if manifest is None:
        return canonical_spec(requested) if requested else default_model_spec()
    if requested and canonical_spec(requested) != manifest.model.spec:
        raise ModelMismatchError(
            f"this index was built with model '{manifest.model.spec}', not '{requested}'; "
            "use another --index for another model"
        )
    return manifest.model.spec


class _IngestRun:
    """The state of one ingest: the plan, the open vector indexes, and the pending commit."""

    def __init__(self, config: IngestConfig, writer: store.StoreWriter, spec: str, progress):
        self.config, self.writer, self.spec, self.progress = config, writer, spec, progress
        self._encoder = None
        self.executor_used = "none"
        self.failures: list[FileError] = []
        self.documents = 0
        self.passage_embeddings: dict = {}  # PDF passages' embeddings by text hash
        self.commits = CommitBuffer(writer, ("images", "texts", "errors"), config.commit_every,
                                    config.commit_seconds)

    # -- model ---------------------------------------------------------------------------
    @property
    def encoder(self):
        """Loaded on first need: an unchanged folder re-ingests without touching the model."""
        if self._encoder is None:
            self._encoder = load_for_inference(self.spec, self.config.precision,
                                               self.config.device)
            self.writer.initialise(self._encoder.info)
            manifest_model = self.writer.manifest.model
            if manifest_model.fingerprint != self._encoder.info.fingerprint:
                raise ModelMismatchError(
                    f"'{self.spec}' changed since this index was built (fingerprint "
                    f"{manifest_model.fingerprint}, now {self._encoder.info.fingerprint}: its "
                    f"weights or settings, or an upgrade of mmindex or of the model's package); "
                    f"re-ingest into a new --index (or delete this one)"
                )
        return self._encoder

    def _ensure_ready(self) -> None:
        """A new index needs its model to exist; an existing one only its FAISS files."""
        if self.writer.manifest is None:
            _ = self.encoder
        if not self.commits.indexes:
            self.commits.open_indexes()

    # -- planning ------------------------------------------------------------------------
    def plan(self, roots: list[str]) -> None:
        self.progress("scanning", 0, 0)
        photos = IMAGE_EXTENSIONS | RAW_EXTENSIONS  # RAW: reported as failed, with what to do
        visual = photos | PDF_EXTENSIONS  # a PDF's pages are rows of images
        scanned = list(walk_files(roots, visual | TEXT_EXTENSIONS))  # one walk for all
        images = [f for f in scanned if Path(f.path).suffix.lower() in visual]
        texts, self.texts_beside_images = split_texts_beside_images(
            [f for f in scanned if Path(f.path).suffix.lower() in TEXT_EXTENSIONS],
            [f for f in images if not is_pdf(f.path)], {r for r in roots if Path(r).is_file()})
        self.image_plan = self._plan_table("images", images, roots)
        self.text_plan = self._plan_table("texts", texts, roots)

    def _plan_table(self, table: str, scanned, roots) -> ChangePlan:
        """A PDF's passages in texts belong to its images plan: they are replaced with its
        pages, and the texts plan (text files) never sees them."""
        manifest = self.writer.manifest
        if manifest is None:
            empty = pa.Table.from_batches([], schema=FILE_SCHEMA)  # no pandas import
            return plan_changes(scanned, empty, empty, roots)
        known = store.read_table(self.writer.root, manifest, table, columns=FILE_COLUMNS)
        errors = errors_for(store.read_table(self.writer.root, manifest, "errors"), table)
        if table == "texts":
            return plan_changes(scanned, _pdf_rows(known, False), errors, roots)
        texts = store.read_table(self.writer.root, manifest, "texts", columns=FILE_COLUMNS)
        return plan_changes(scanned, known, errors, roots, text_layer=_pdf_rows(texts, True))

    def _start_table(self, table: str, plan: ChangePlan) -> bool:
        """Queue the removal of deleted files; False when the table has nothing to do."""
        if not (plan.candidates or plan.gone_ids or plan.gone_error_ids or plan.gone_text_ids):
            return False
        self._ensure_ready()
        self.commits.remove(table, plan.gone_ids)
        self.commits.remove("errors", plan.gone_error_ids)
        self.commits.remove("texts", plan.gone_text_ids)
        return True

    # -- images and PDF pages -------------------------------------------------------------
    def process_images(self) -> None:
        """Photos and PDF pages in one stream of items (a path, or a page item). A file's
        rows enter the commit together, once all its items are back: a PDF is never
        committed with some of its pages (a crash then would leave it looking unchanged)."""
        plan = self.image_plan
        if not self._start_table("images", plan):
            return
        groups = _group_by_sha(plan.candidates)  # identical files are encoded once
        documents = self._read_documents(groups)  # sha -> the PDF's pages and passages
        files = {sha: _PendingFile(group, documents.get(sha)) for sha, group in groups.items()}
        items = self._items_to_decode(files)
        for sha in [s for s, p in files.items() if p.complete()]:
            self._emit_file(files.pop(sha))
        if self._use_ray(len(items)):  # workers write the shards; nothing comes back here
            self._write_images_on_ray(files, items)
        else:
            self._encode_images_here(files, items)

    def _items_to_decode(self, files: dict[str, _PendingFile]) -> dict[str, tuple]:
        """What to decode (a path, or a page item) -> (sha, page); stored rows of the same
        content and page (a touched-but-identical file) are taken instead of decoding."""
        stored = self._stored_images(set(files))
        items = {}
        for sha, pending in files.items():
            for page in pending.pages():
                if (sha, page) in stored:
                    pending.results[page] = stored[sha, page]
                else:
                    path = pending.group[0].stat.path
                    items[page_item(path, page) if page else path] = (sha, page)
        return items

    def _encode_images_here(self, files: dict[str, _PendingFile], items: dict) -> None:
        """The local loop: results come back here and become rows, a file at a time."""
        done = 0
        options = {"max_pixels": self.config.max_pixels, "pdf_dpi": self.config.pdf_dpi,
                   "decode_threads": self.config.decode_threads}
        for batch in self._run_encoder(ImageBatchEncoder, options, "path", list(items)):
            for i, item in enumerate(batch["path"]):
                row = {k: batch[k][i] for k in ("ok", "reason", "width", "height", "format",
                                                *PHOTO_COLUMNS)}
                row["embedding"] = batch["embedding"][i]
                sha, page = items[str(item)]
                files[sha].results[page] = row
                if files[sha].complete():
                    self._emit_file(files.pop(sha))
            done += len(batch["path"])
            self.progress("encoding images", done, len(items))
            self.commits.maybe_commit()

    def _read_documents(self, groups: dict[str, list[Candidate]]) -> dict[str, _Document]:
        """Each PDF's page count and text layer (its passages encoded now, so they commit with
        its pages). A PDF that does not open, or has too many pages, goes to errors here."""
        documents, passages = {}, {}
        pdfs = [sha for sha, group in groups.items() if is_pdf(group[0].stat.path)]
        for n, sha in enumerate(pdfs, 1):
            path = groups[sha][0].stat.path
            try:
                pages = page_count(path, self.config.max_pdf_pages)
                docs = [TextDocument(page_key(p), text) for p, text in page_texts(path)]
            except (DecodeError, OSError) as exc:
                for candidate in groups.pop(sha):
                    self._replace_rows(candidate)
                    self._record_failure("images", candidate, _reason(exc))
                continue
            documents[sha] = _Document(pages, docs)
            passages.update((text_sha256(d.text), d.text) for d in docs)
            self.progress("reading PDFs", n, len(pdfs))
        self.passage_embeddings = self._encode_texts(passages)
        return documents

    def _emit_file(self, pending: _PendingFile) -> None:
        """The rows of one file (a photo, or every page of a PDF) for each identical copy."""
        for candidate in pending.group:
            self._replace_rows(candidate)
            for page, result in sorted(pending.results.items(), key=lambda kv: kv[0] or 0):
                if not result["ok"]:
                    reason = str(result["reason"])
                    self._record_failure("images", candidate,
                                         f"{page_key(page)}: {reason}" if page else reason)
                    continue
                row_id = candidate.old_ids[0] if candidate.old_ids and not page \
                    else self.writer.new_id()  # a photo keeps its id; pages are renumbered
                row = _file_row(row_id, candidate) | image_columns(result) | {"page": page}
                self.commits.add("images", row, result["embedding"])
            if pending.document is not None:
                self._add_passages(candidate, pending.document.passages, self.passage_embeddings)

    def _replace_rows(self, candidate: Candidate) -> None:
        """Queue the removal of every row the file had: its images, errors and passages."""
        self.commits.remove("images", candidate.old_ids)
        self.commits.remove("errors", candidate.old_error_ids)
        self.commits.remove("texts", candidate.old_text_ids)

    def _stored_images(self, shas: set[str]) -> dict[tuple[str, int | None], dict]:
        """Stored rows by (content hash, page): a touched-but-identical file is not decoded."""
        found = {}
        for row in self._stored_rows("images", "sha256", shas):
            found.setdefault((row["sha256"], row.get("page")), row | {"ok": True})
        return found

    def _record_failure(self, table: str, candidate: Candidate, reason: str,
                        row_id: int | None = None) -> None:
        self.failures.append(FileError(candidate.stat.path, reason))
        row_id = self.writer.new_id() if row_id is None else row_id
        row = _file_row(row_id, candidate) | {"table": table, "reason": reason}
        self.commits.add("errors", row, None)

    # -- images on Ray: workers write the shards, the driver adopts them -------------------
    def _write_images_on_ray(self, files: dict[str, _PendingFile], items: dict) -> None:
        """Each row's id is assigned here before dispatch (a re-run of the same plan on the
        same index gives the same ids); workers decode (pages too: an item is a path or a
        page item), encode and write shards of the images table; this process gets back
        shard names, counts, checksums and failures, and commits as the local loop does
        (commit_every / commit_seconds), but never while a file has only some of its rows
        landed: a PDF's pages (and passages) commit together."""
        from mmindex.ingestion.ray_job import ImageItems, ImageJob, write_image_shards

        encoder = self.encoder  # checks the model's fingerprint; its preprocessing travels
        c, waiting, inputs, left = self.config, {}, ImageItems(), {}
        for item, (sha, page) in items.items():
            members = []
            for candidate in files[sha].group:
                row_id = candidate.old_ids[0] if candidate.old_ids and not page \
                    else self.writer.new_id()  # a photo keeps its id; pages are renumbered
                waiting[row_id] = (candidate, sha, page)
                members.append(_file_row(row_id, candidate) | {"page": page})
                left[sha] = left.get(sha, 0) + 1
            inputs.add(item, members)
        job = ImageJob(self.spec, c.precision, c.device, encoder.preprocess,
                       encoder.info.image_size, c.max_pixels, storage.root_uri(self.writer.root),
                       self.writer.worker_prefix(), self.writer.manifest.model, c.batch_size,
                       min(c.commit_every, store.MAX_SHARD_ROWS), c.pdf_dpi)
        total, landing = len(waiting), _Landing(files, left)
        shards = write_image_shards(inputs.table(), job, c.ray_address, self._pool())
        with contextlib.closing(shards):  # a failed commit stops the job (and its Ray) at once
            for written in shards:
                self._land(written, waiting, landing)
                self.progress("encoding images", total - len(waiting), total)
                if not landing.partial():
                    self.commits.maybe_commit()
        self.commits.flush()
        self.writer.end_worker_writes(job.prefix)

    def _land(self, written: dict, waiting: dict, landing: _Landing) -> None:
        """One written shard (and the batch's failures) into the pending commit, with the
        removal of the rows its files replace: in the same commit, so an id is never held
        by two rows and a file is never missing from a generation."""
        for failure in written["failures"]:
            for member in failure["files"]:
                candidate, sha, page = waiting.pop(member["id"])
                self._start_landing(landing, sha)
                reason = failure["reason"]
                self._record_failure("images", candidate,
                                     f"{page_key(page)}: {reason}" if page else reason,
                                     member["id"])
                self._landed(landing, sha)
        if not written["shard"]:
            return
        ids = store.read_shard(self.writer.root, written["shard"], ["id"]).column("id")
        landed = []
        for row_id in ids.to_pylist():
            if row_id not in waiting:
                raise IndexWriteError(f"shard {written['shard']} holds row {row_id}, which this "
                                      "ingest did not dispatch; nothing of it was committed")
            landed.append(waiting.pop(row_id)[1])
        for sha in landed:
            self._start_landing(landing, sha)
        self.commits.adopt("images", store.WrittenShard(written["shard"], written["rows"],
                                                        written["sha256"]))
        for sha in landed:
            self._landed(landing, sha)

    def _start_landing(self, landing: _Landing, sha: str) -> None:
        """A file's first row back: its old rows go in the commit that adds its new ones."""
        if sha not in landing.started:
            landing.started.add(sha)
            for candidate in landing.files[sha].group:
                self._replace_rows(candidate)

    def _landed(self, landing: _Landing, sha: str) -> None:
        """One row of a file back; with its last, its stored pages and its passages."""
        landing.left[sha] -= 1
        if not landing.left[sha]:
            self._emit_file(landing.files.pop(sha))

    # -- texts ---------------------------------------------------------------------------
    def process_texts(self) -> None:
        plan = self.text_plan
        if not self._start_table("texts", plan):
            return
        documents = self._parse_text_files(plan.candidates)
        embeddings = self._encode_texts(
            {text_sha256(d.text): d.text for _, docs in documents for d in docs})
        for candidate, docs in documents:
            self.commits.remove("texts", candidate.old_ids)
            self.commits.remove("errors", candidate.old_error_ids)
            self._add_passages(candidate, docs, embeddings)
            self.commits.maybe_commit()

    def _encode_texts(self, wanted: dict[str, str]) -> dict[str, np.ndarray]:
        """Embeddings by text hash: stored ones reused, the rest encoded."""
        embeddings = {}
        for row in self._stored_rows("texts", "text_sha256", set(wanted)):
            embeddings.setdefault(row["text_sha256"], np.asarray(row["embedding"]))
        missing = [wanted[s] for s in wanted if s not in embeddings]
        for batch in self._run_encoder(TextBatchEncoder, {}, "text", missing):
            for text, vector in zip(batch["text"], batch["embedding"]):
                embeddings[text_sha256(str(text))] = vector
            self.progress("encoding texts", len(embeddings), len(wanted))
        return embeddings

    def _parse_text_files(self, candidates: list[Candidate]):
        parsed = []
        for candidate in candidates:
            try:
                docs = read_text_documents(candidate.stat.path)
                if not docs:  # recorded, so an unchanged empty file is not "added" every run
                    raise CorpusError("holds no text to index (an empty file, or no row with "
                                      "a non-empty 'text')")
                parsed.append((candidate, docs))
            except (CorpusError, OSError) as exc:
                self.commits.remove("texts", candidate.old_ids)
                self.commits.remove("errors", candidate.old_error_ids)
                self._record_failure("texts", candidate, str(exc))
        return parsed

    def _add_passages(self, candidate: Candidate, docs, embeddings: dict) -> None:
        for doc in docs:
            sha = text_sha256(doc.text)
            row = _file_row(self.writer.new_id(), candidate) | {
                "key": doc.key, "text": doc.text, "text_sha256": sha}
            self.commits.add("texts", row, embeddings[sha])
            self.documents += 1

    # -- shared --------------------------------------------------------------------------
    def _stored_rows(self, table: str, key: str, wanted: set[str]) -> list[dict]:
        """Rows already in the index whose `key` (a content hash) is wanted: their embeddings
        are reused, not encoded again."""
        manifest = self.writer.manifest
        if not wanted or manifest is None or not manifest.tables[table].rows:
            return []
        stored, vectors = store.read_matching_vectors(self.writer.root, manifest, table, key,
                                                      wanted)  # (N, D)
        rows = stored.to_pylist()
        # a damaged stored vector is never copied into a new row: its file is re-encoded
        return [row | {"embedding": vector}
                for row, vector, ok in zip(rows, vectors, unit_vectors(vectors)) if ok]

    def _use_ray(self, to_encode: int) -> bool:
        """Ray when asked for, or by size (`auto`); remembered for the summary."""
        if not to_encode:
            return False
        c = self.config
        asked_for_ray = c.ray_address or c.actors > 1  # a cluster or a pool: Ray at any size
        use_ray = c.executor == "ray" or (
            c.executor == "auto" and (asked_for_ray or to_encode >= c.ray_threshold))
        self.executor_used = "ray" if use_ray else "local"
        return use_ray

    def _pool(self):
        from mmindex.ingestion.ray_job import ActorPool

        c = self.config
        return ActorPool(c.actors, c.actor_cpus, gpu=c.device == "cuda")

    def _run_encoder(self, worker_cls, kwargs: dict, column: str, values: list) -> Iterator[dict]:
        if not values:
            return iter(())
        c = self.config
        if self._use_ray(len(values)):
            from mmindex.ingestion.ray_job import run_ray

            spec = {"spec": self.spec, "precision": c.precision, "device": c.device}
            return run_ray(worker_cls, {**spec, **kwargs}, column, values, c.batch_size,
                           c.ray_address, self._pool())
        worker = worker_cls(spec=self.spec, encoder=self.encoder, **kwargs)
        return _run_local(worker, column, values, self.config.batch_size)

    def finish(self) -> None:
        self.commits.finish()

    def summary(self, seconds: float) -> IngestSummary:
        plans = (self.image_plan, self.text_plan)
        failed = {f.path for f in self.failures}
        candidates = [c for p in plans for c in p.candidates if c.stat.path not in failed]
        updated = sum(1 for c in candidates if c.old_ids or c.old_error_ids)
        manifest = self.writer.manifest
        return IngestSummary(
            added=len(candidates) - updated, updated=updated,
            removed=sum(p.removed_files for p in plans),
            unchanged=sum(p.unchanged for p in plans), failed=len(self.failures),
            documents=self.documents, seconds=round(seconds, 3), model=self.spec,
            executor=self.executor_used, generation=manifest.generation if manifest else 0,
            errors=tuple(self.failures),
            texts_beside_images=tuple(f.path for f in self.texts_beside_images))


@dataclass(frozen=True)
class _Document:
    """A PDF as planned: its page count and the passages of its text layer."""

    pages: int
    passages: list[TextDocument]


@dataclass
class _Landing:
    """The Ray path's files whose rows are coming back from the workers: rows still out
    per file, and the files that have begun to land."""

    files: dict[str, _PendingFile]
    left: dict[str, int]
    started: set[str] = field(default_factory=set)

    def partial(self) -> bool:
        return any(sha in self.files for sha in self.started)


@dataclass
class _PendingFile:
    """One file's identical copies and the results of its items gathered so far: one for a
    photo (page None), one a page for a PDF."""

    group: list[Candidate]
    document: _Document | None
    results: dict = field(default_factory=dict)  # page (None for a photo) -> result

    def pages(self) -> list[int | None]:
        return list(range(1, self.document.pages + 1)) if self.document else [None]

    def complete(self) -> bool:
        return len(self.results) == (self.document.pages if self.document else 1)


def _pdf_rows(table: pa.Table, keep: bool) -> pa.Table:
    """The rows whose path is a PDF's (keep=True), or all the others."""
    is_pdf_path = pc.ends_with(pc.utf8_lower(table.column("path")), ".pdf")
    return table.filter(is_pdf_path if keep else pc.invert(is_pdf_path))


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot read file: {exc.strerror or exc}"
    return str(exc)


def _group_by_sha(candidates: list[Candidate]) -> dict[str, list[Candidate]]:
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.sha256, []).append(candidate)
    return groups


def _file_row(row_id: int, candidate: Candidate) -> dict:
    stat = candidate.stat
    return {"id": row_id, "path": stat.path, "size": stat.size, "mtime_ns": stat.mtime_ns,
            "sha256": candidate.sha256}


def _run_local(worker, column: str, values: list, batch_size: int) -> Iterator[dict]:
    """The in-process executor: batch i+1 decodes in a thread while batch i encodes
    (Pillow and torch both release the GIL, so the two overlap on two cores)."""
    batches = [{column: np.array(values[i:i + batch_size], dtype=object)}
               for i in range(0, len(values), batch_size)]
    if not hasattr(worker, "prepare"):
        yield from (worker(b) for b in batches)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(worker.prepare, batches[0])
        for nxt in batches[1:] + [None]:
            prepared = pending.result()
            if nxt is not None:
                pending = pool.submit(worker.prepare, nxt)
            yield worker.encode(prepared)

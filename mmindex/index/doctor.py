"""Checking an index directory, and rebuilding what can be rebuilt without re-encoding.

check_index reads everything the manifest names and compares it: shards readable and of the
right schema, row counts as recorded, ids unique, each FAISS file holding exactly the table's
ids and its vectors. repair_index then, under the writer lock:
- rebuilds a damaged or missing manifest from the Parquet shards (each shard names its model);
- drops shards that are missing or unreadable (moved to damaged/; their files are re-encoded
  by the next ingest, since the index no longer knows them);
- rebuilds FAISS files from the embeddings stored in the shards.
A shard is damaged when it cannot be read, when its bytes differ from the SHA-256 recorded
at its commit, or when an embedding in it is not a finite unit vector; only when the shards
pass does a FAISS file that disagrees with them count as the damaged side. A repair never
builds FAISS from an embedding that is not a finite unit vector.
The repair is one ordinary commit, so a crash during it leaves the index as it was."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmindex.errors import IndexFormatError, MmindexError
from mmindex.index import store
from mmindex.index.schema import TABLES, VECTOR_TABLES, conform, table_schema
from mmindex.index.vectors import VectorIndex, unit_vectors
from mmindex.models.encoder import EncoderInfo

DAMAGED = "damaged"  # where repair moves unreadable files, for a person to inspect
VECTOR_SAMPLE = 32  # stored embeddings compared with FAISS's copy, per table
_GENERATION = re.compile(r"g(\d+)-")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error": wrong or unreadable; "warning": harmless leftovers
    subject: str  # a file relative to the index, or a table name
    problem: str
    repair: str | None = None  # what --repair does about it; None when it cannot


@dataclass(frozen=True)
class DoctorReport:
    root: str
    generation: int | None
    findings: tuple[Finding, ...] = ()
    repaired: tuple[str, ...] = ()  # what repair_index did

    @property
    def healthy(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict:
        return asdict(self) | {"healthy": self.healthy}


# -- checking ---------------------------------------------------------------------------------
@dataclass
class _TableScan:
    """What the shards of one table hold, as far as they could be read."""

    rows: list[pa.Table] = field(default_factory=list)
    bad_shards: list[str] = field(default_factory=list)

    def table(self, name: str, dim: int) -> pa.Table:
        return pa.concat_tables(self.rows) if self.rows else table_schema(name, dim).empty_table()


def check_index(root: str | Path, attempts: int = 10) -> DoctorReport:
    """A writer committing meanwhile can delete files the manifest we read named: a check
    whose generation moved on is taken again."""
    for _ in range(attempts):
        report = _check_once(Path(root))
        if report.healthy or report.generation is None or _generation(root) == report.generation:
            break
    return report


def _generation(root) -> int | None:
    try:
        return store.read_manifest(Path(root)).generation
    except IndexFormatError:
        return None


def _check_once(root: Path) -> DoctorReport:
    findings: list[Finding] = []
    manifest = _manifest_or_finding(root, findings)
    if manifest is not None:
        scans = {name: _scan_table(root, manifest, name, findings) for name in TABLES}
        _check_ids(manifest, scans, findings)
        for name in VECTOR_TABLES:
            _check_faiss(root, manifest, name, scans[name].table(name, manifest.model.dim),
                         findings, whole=not scans[name].bad_shards)
        findings += _leftovers(root, manifest)
    return DoctorReport(str(root), manifest.generation if manifest else None, tuple(findings))


def _manifest_or_finding(root: Path, findings: list[Finding]) -> store.Manifest | None:
    if not (root / store.MANIFEST).exists() and not store.data_files(root):
        raise IndexFormatError(f"no index at {root} (no {store.MANIFEST} and no shards)")
    try:
        return store.read_manifest(root)
    except IndexFormatError as exc:
        rebuildable = "rebuild it from the shards" if store.data_files(root) else None
        findings.append(Finding("error", store.MANIFEST, str(exc), rebuildable))
        return None


def _scan_table(root: Path, manifest: store.Manifest, name: str, findings) -> _TableScan:
    scan = _TableScan()
    expected = table_schema(name, manifest.model.dim)
    for shard in manifest.tables[name].shards:
        try:
            # a missing or unparsable one says so; columns added since it was written are null
            table = conform(store.read_shard(root, shard), expected)
            damage = store.checksum_problem(root, manifest.tables[name], shard)
            if damage:
                raise IndexFormatError(f"shard {shard} {damage}")
            if not table.schema.equals(expected, check_metadata=False):
                raise IndexFormatError(f"its schema is not the {name} schema of dim "
                                       f"{manifest.model.dim}")
            insane = _insane_embeddings(table)
            if insane:
                raise IndexFormatError(f"shard {shard} holds {insane} embeddings that are not "
                                       "finite unit vectors: it is damaged")
            scan.rows.append(table)
        except IndexFormatError as exc:
            scan.bad_shards.append(shard)
            findings.append(Finding("error", shard, str(exc), "drop it; the next ingest "
                                    "re-encodes the files it held"))
    stored = sum(t.num_rows for t in scan.rows)
    if not scan.bad_shards and stored != manifest.tables[name].rows:
        findings.append(Finding("error", name, f"the manifest counts {manifest.tables[name].rows} "
                                f"rows, the shards hold {stored}", "correct the count"))
    return scan


def _insane_embeddings(rows: pa.Table) -> int:
    """How many rows' embeddings are not finite, L2-normalised vectors (none for errors)."""
    if "embedding" not in rows.column_names or not rows.num_rows:
        return 0
    return int((~unit_vectors(_embeddings(rows))).sum())


def _embeddings(rows: pa.Table) -> np.ndarray:
    return store.embedding_matrix(rows.column("embedding"))


def _check_ids(manifest: store.Manifest, scans: dict[str, _TableScan], findings) -> None:
    """Ids are unique across every table and below next_id (new_id never reuses one)."""
    ids = np.concatenate([t.column("id").to_numpy() for s in scans.values() for t in s.rows]
                         or [np.array([], np.int64)])
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        findings.append(Finding("error", "ids", f"{int((counts > 1).sum())} ids appear more "
                                "than once; re-ingest into a new --index"))
    if len(unique) and unique[-1] >= manifest.next_id:
        findings.append(Finding("error", "ids", f"id {int(unique[-1])} is not below next_id "
                                f"{manifest.next_id}", "raise next_id"))


def _check_faiss(root: Path, manifest: store.Manifest, name: str, rows: pa.Table,
                 findings, whole: bool = True) -> None:
    """`whole`: rows holds every row of the table. When a shard is damaged it does not, and
    FAISS is then only checked to hold sane copies of the rows that were readable."""
    subject = manifest.tables[name].faiss or f"{name} (no FAISS file)"
    if manifest.tables[name].faiss is None and rows.num_rows == 0:
        return
    try:
        if manifest.tables[name].faiss is None:
            raise IndexFormatError(f"the {name} table has rows but no FAISS file")
        vectors = store.read_vectors(root, manifest, name)
        problem = _faiss_disagreement(vectors, rows, whole)
    except IndexFormatError as exc:
        problem = str(exc)
    if problem:
        findings.append(Finding("error", subject, problem, "rebuild it from the stored "
                                "embeddings"))


def _faiss_disagreement(vectors: VectorIndex, rows: pa.Table, whole: bool = True) -> str | None:
    """Same ids, and (where the index keeps exact vectors: flat, ivfpq) the same vectors as
    the shards store. The shards passed their checksums and sanity checks before this, so
    where the two differ it is FAISS's copy that is wrong."""
    stored_ids = np.sort(rows.column("id").to_numpy())
    faiss_ids = np.sort(_faiss_ids(vectors))
    if not whole:
        if not np.isin(stored_ids, faiss_ids).all():
            return "FAISS lacks ids of rows the readable shards hold"
    elif not np.array_equal(stored_ids, faiss_ids):
        return (f"FAISS holds {len(faiss_ids)} ids, the table {len(stored_ids)} rows, and the "
                "ids differ")
    problem = vectors.internal_problem()
    if problem or vectors.kind == "ivf" or not len(stored_ids):
        return problem
    picked = np.random.default_rng(0).permutation(len(stored_ids))[:VECTOR_SAMPLE]
    for i in picked:
        stored = np.asarray(rows.column("embedding")[int(i)].as_py(), np.float32)
        held = vectors.exact_vector(int(rows.column("id")[int(i)].as_py()))
        if not np.allclose(stored, held, atol=1e-5):
            return (f"FAISS's vector for id {rows.column('id')[int(i)]} is not the stored one "
                    "(the shard passed its checks, so FAISS's copy is the damaged one)")
    return None


def _faiss_ids(vectors: VectorIndex) -> np.ndarray:
    return vectors.ids()


def _leftovers(root: Path, manifest: store.Manifest) -> list[Finding]:
    live = manifest.files()
    orphans = [p.relative_to(root).as_posix() for p in store.data_files(root)]
    orphans = [p for p in orphans if p not in live] + [p.name for p in root.glob("*.tmp")]
    return [Finding("warning", p, "no manifest names it (left by an interrupted writer)",
                    "remove it") for p in orphans]


# -- repairing --------------------------------------------------------------------------------
def repair_index(root: str | Path, model: str | None = None) -> DoctorReport:
    """Fix what check_index finds, in one commit; `model` names the index's model when no
    shard records it (indexes written before shards carried it). The writer lock comes
    first, so even a healthy index is not checked, let alone repaired, during an ingest."""
    root = Path(root)
    if not (root / store.MANIFEST).exists() and not store.data_files(root):
        raise IndexFormatError(f"no index at {root} (no {store.MANIFEST} and no shards)")
    with store.StoreWriter(root, repairing=True) as writer:
        before = check_index(root)
        if before.healthy and not before.findings:
            return before
        if before.generation is None:
            done = _rebuild_manifest(writer, model)
        else:
            done = _repair_from_manifest(writer, store.read_manifest(root))
    after = check_index(root)
    return replace(after, repaired=tuple(done))


def _repair_from_manifest(writer: store.StoreWriter, manifest: store.Manifest) -> list[str]:
    done, tables, rows = [], dict(manifest.tables), {}
    for name in TABLES:
        scan = _scan_table(writer.root, manifest, name, [])
        for shard in scan.bad_shards:
            _quarantine(writer.root, shard)
            done.append(f"dropped {shard} (moved to {DAMAGED}/; none of its rows is trusted or "
                        "put into FAISS); the next ingest re-encodes the files it held from disk")
        rows[name] = scan.table(name, manifest.model.dim)
        shards = tuple(s for s in manifest.tables[name].shards if s not in scan.bad_shards)
        recorded = tables[name].checksums or {}
        tables[name] = replace(tables[name], shards=shards, rows=rows[name].num_rows,
                               checksums={s: recorded[s] for s in shards if s in recorded} or None)
    top_id = max([int(pc.max(t.column("id")).as_py()) for t in rows.values() if t.num_rows] or [-1])
    writer.manifest = replace(manifest, tables=tables, next_id=max(manifest.next_id, top_id + 1))
    rebuilt = _faiss_to_rebuild(writer.root, writer.manifest, rows)
    done += [f"rebuilt the {name} FAISS index from {rows[name].num_rows} stored embeddings"
             for name in rebuilt]
    _commit(writer, {}, rebuilt)
    return done + ["committed the repair", "removed files no manifest names"]


def _faiss_to_rebuild(root: Path, manifest: store.Manifest, rows: dict) -> dict:
    rebuilt = {}
    for name in VECTOR_TABLES:
        findings: list[Finding] = []
        _check_faiss(root, manifest, name, rows[name], findings)
        if findings:
            rebuilt[name] = _build_vectors(rows[name], manifest.model.dim)
    return rebuilt


def _commit(writer: store.StoreWriter, changes: dict, rebuilt: dict[str, VectorIndex]) -> None:
    writer.commit(changes, {name: v.to_bytes() for name, v in rebuilt.items()},
                  {name: v.describe() for name, v in rebuilt.items()})


def _build_vectors(rows: pa.Table, dim: int) -> VectorIndex:
    if not rows.num_rows:
        return VectorIndex.empty(dim)
    vectors = _embeddings(rows)  # (N, D)
    if not unit_vectors(vectors).all():  # shards holding such rows were dropped before this
        raise MmindexError("refusing to build a FAISS index from embeddings that are not "
                           "finite unit vectors; run `mmindex doctor` to see which shard")
    return VectorIndex.build(rows.column("id").to_numpy(), vectors, dim)


def _quarantine(root: Path, relative: str) -> None:
    source = root / relative
    if source.exists():
        target = root / DAMAGED / relative.replace("/", "-")
        target.parent.mkdir(exist_ok=True)
        source.replace(target)


# -- a manifest from the shards ---------------------------------------------------------------
def _rebuild_manifest(writer: store.StoreWriter, model: str | None) -> list[str]:
    """Every readable shard is read; where shards disagree about a file (a killed writer's
    leftovers beside the live ones), the rows of the newest generation win."""
    root = writer.root
    shards = _gather_shards(root)
    info = _model_info(shards, model)
    rows = {name: _newest_rows(name, shards.get(name, []), info.dim) for name in TABLES}
    rows = _drop_superseded_errors(rows)
    top_generation = max([g for found in shards.values() for g, _ in found] or [0])
    top_id = max([int(pc.max(t.column("id")).as_py()) for t in rows.values() if t.num_rows] or [-1])
    empty = store.Manifest(store.FORMAT_VERSION, top_generation, info, top_id + 1,
                           {name: store.TableState() for name in TABLES})
    writer.manifest = empty
    changes = {name: store.TableChange(add=t) for name, t in rows.items() if t.num_rows}
    _commit(writer, changes, {name: _build_vectors(rows[name], info.dim) for name in VECTOR_TABLES})
    counts = ", ".join(f"{t.num_rows} {name}" for name, t in rows.items())
    return [f"rebuilt {store.MANIFEST} from the shards ({counts} rows, model {info.spec})",
            "rebuilt the FAISS indexes from the stored embeddings",
            "removed files no manifest names"]


def _gather_shards(root: Path) -> dict[str, list[tuple[int, pa.Table]]]:
    """(generation, rows) of every readable shard; unreadable ones are moved to damaged/."""
    found: dict[str, list[tuple[int, pa.Table]]] = {}
    for name in TABLES:
        for path in sorted((root / name).glob("*.parquet")):
            relative = path.relative_to(root).as_posix()
            match = _GENERATION.match(path.name)
            try:
                table = store.read_shard(root, relative)
                if _insane_embeddings(table):
                    raise IndexFormatError(f"{relative} holds embeddings that are not unit vectors")
            except IndexFormatError:
                _quarantine(root, relative)  # the next ingest re-encodes the files it held
                continue
            found.setdefault(name, []).append((int(match.group(1)) if match else 0, table))
    return found


def _model_info(shards: dict, spec: str | None) -> EncoderInfo:
    for found in shards.values():
        for _, table in found:
            recorded = (table.schema.metadata or {}).get(store.MODEL_METADATA)
            if recorded:
                return EncoderInfo(**json.loads(recorded))
    if spec is None:
        raise MmindexError("no shard records the index's model; name it with --model")
    from mmindex.models.registry import load_encoder

    return load_encoder(spec).info  # the weights only, to learn the fingerprint; no encoding


def _newest_rows(name: str, found: list[tuple[int, pa.Table]], dim: int) -> pa.Table:
    """Per path, the rows of the newest shard holding that path; then one row per id."""
    schema = table_schema(name, dim)
    if not found:
        return schema.empty_table()
    rows = pa.concat_tables([conform(t, schema).cast(schema) for _, t in found])
    generations = np.concatenate([np.full(t.num_rows, g, np.int64) for g, t in found])
    paths = rows.column("path").to_pylist()
    newest: dict[str, int] = {}
    for path, generation in zip(paths, generations):
        newest[path] = max(newest.get(path, -1), int(generation))
    keep = np.array([g == newest[p] for p, g in zip(paths, generations)], dtype=bool)
    rows = rows.filter(pa.array(keep))
    _, first = np.unique(rows.column("id").to_numpy(), return_index=True)  # one row per id
    return rows.take(pa.array(np.sort(first)))


def _drop_superseded_errors(rows: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """A path with data rows is no longer an error: the later, successful ingest wins."""
    indexed = pa.concat_arrays([rows[n].column("path").combine_chunks() for n in VECTOR_TABLES])
    errors = rows["errors"]
    keep = pc.invert(pc.is_in(errors.column("path"), value_set=indexed))
    return rows | {"errors": errors.filter(keep)}

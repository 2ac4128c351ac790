"""Index: a reader of one generation of an index directory, and its searches.

query text / image / vector -> encoder -> FAISS top-k (restricted to the ids a --where
filter admits) -> rows -> Hits. A reader reads the manifest once and keeps that generation
in memory, so a writer committing meanwhile changes nothing it sees."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmindex.core.paths import default_index_dir
from mmindex.data.pages import page_of_key, where_in_file
from mmindex.errors import MissingFileError, ModelMismatchError, UserInputError
from mmindex.index import store
from mmindex.index.schema import SEARCH_TABLES, VECTOR_TABLES, table_schema
from mmindex.index.storage import index_root
from mmindex.index.vectors import VectorIndex
from mmindex.search.lexical import (
    FUSION_DEPTH,
    LexicalIndex,
    check_mode,
    reciprocal_rank_fusion,
)
from mmindex.search.query import ParsedQuery, combine, parse_query

WHERE_TIMEOUT_S = 10.0  # a metadata predicate over 1M rows takes well under a second
# DuckDB's own bounds for a --where: no files, one thread, a memory cap and no spilling to a
# temporary directory, so a hostile predicate can hold neither the machine's cores nor disk.
WHERE_SETTINGS = {"enable_external_access": False, "threads": 1, "memory_limit": "512MB",
                  "max_temp_directory_size": "0B"}
WHERE_GRACE_S = 0.5  # after the interrupt, how long the caller waits for DuckDB to notice


@dataclass(frozen=True)
class Hit:
    rank: int
    id: int
    score: float
    path: str
    table: str
    text: str | None = None  # texts only
    key: str | None = None  # texts only: where in the file
    width: int | None = None  # images only
    height: int | None = None
    page: int | None = None  # images only: the page of the PDF at `path` (1-based)
    taken: str | None = None  # images only, from EXIF: ISO 8601, the camera's clock
    camera: str | None = None
    lens: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    box: tuple[int, int, int, int] | None = None  # images: the tile that matched (x0, y0, x1, y1)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def label(self) -> str:
        """Where the hit is, for a person: `report.pdf p. 3` for a PDF page or its text
        layer, `notes.csv row 12` for a table row, else the path."""
        return where_in_file(self.path, self.page, self.key)


@dataclass(frozen=True)
class TableInfo:
    rows: int
    shards: int
    bytes: int
    index_kind: str | None


@dataclass(frozen=True)
class IndexInfo:
    root: str
    model: str
    dim: int
    fingerprint: str
    generation: int
    tables: dict[str, TableInfo]
    errors: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def open_index(path: str | Path | None = None) -> Index:
    return Index(index_root(path) if path else default_index_dir())  # a path or file:// URI


class Index:
    def __init__(self, root: Path, encoder=None, where_timeout_s: float = WHERE_TIMEOUT_S):
        self.root = Path(root)
        self.where_timeout_s = where_timeout_s
        self._encoder = encoder
        self._query_encoder = None  # what embeds queries; see query_encoder
        self._lexical: LexicalIndex | None = None  # BM25 over texts; see lexical()
        self._pages: dict | None = None  # image ids by (path, page); see _pages_by_text_link
        self._load_generation()

    def _load_generation(self, attempts: int = 20) -> None:
        """Read the manifest and everything it names into memory: a snapshot that a writer's
        next commit (which deletes unreferenced files) cannot pull from under us. A file
        vanishing between reading the manifest and the shards means a commit landed: retry.
        If the generation did not move, the file is really gone: the index is damaged."""
        for attempt in range(attempts):
            self.manifest = store.read_manifest(self.root)
            self._rows: dict[str, pa.Table] = {}
            self._vectors: dict[str, VectorIndex] = {}
            try:
                for table in self.manifest.tables:
                    self.rows(table)
                    if table in VECTOR_TABLES:
                        self.vectors(table)
                self._shard_bytes = {t: self._stat_shards(t) for t in self.manifest.tables}
                return
            except MissingFileError:
                moved = store.read_manifest(self.root).generation != self.manifest.generation
                if not moved or attempt == attempts - 1:
                    raise

    def reopened(self) -> Index:
        """This index at the newest committed generation: itself when that is still the one
        it holds, else a new snapshot that keeps the models already loaded (the same model
        by fingerprint), so a long-lived server stays warm across commits."""
        manifest = store.read_manifest(self.root)  # IndexFormatError when missing or damaged
        if manifest.generation == self.manifest.generation:
            return self
        same_model = manifest.model == self.manifest.model
        fresh = Index(self.root, encoder=self._encoder if same_model else None,
                      where_timeout_s=self.where_timeout_s)
        if same_model:
            fresh._query_encoder = self._query_encoder
        if _shards(manifest, "texts") == _shards(self.manifest, "texts"):
            fresh._lexical = self._lexical  # the same shards hold the same texts: same BM25
        return fresh

    def _stat_shards(self, table: str) -> int:
        """Taken with the snapshot, since a later commit may collect these files."""
        try:
            return sum((self.root / s).stat().st_size for s in self.manifest.tables[table].shards)
        except FileNotFoundError as exc:
            raise MissingFileError(f"shard {exc.filename} is missing; run `mmindex "
                                   "doctor`") from None

    # -- lazily loaded parts of this generation --------------------------------------------
    @property
    def encoder(self):
        """The index's own model, always: a search with another model would be meaningless."""
        if self._encoder is None:
            from mmindex.models.registry import load_encoder

            self._encoder = load_encoder(self.manifest.model.spec)
        if self._encoder.info.fingerprint != self.manifest.model.fingerprint:
            raise ModelMismatchError(
                f"index {self.root} was built with '{self.manifest.model.spec}' "
                f"(fingerprint {self.manifest.model.fingerprint}) but the model loaded now has "
                f"fingerprint {self._encoder.info.fingerprint}: its weights or settings changed "
                f"(the files on disk, or an upgrade of mmindex or of the model's package); "
                f"ingest into a new --index (or delete this one) to rebuild it")
        return self._encoder

    @property
    def query_encoder(self):
        """What embeds queries, text and image: the model given to this Index, else the
        model's ONNX export (no torch, no image tower for a text query: models/exported.py),
        written from the full model by the first query of a model that has none, else the
        full model."""
        if self._query_encoder is None:
            self._query_encoder = self._encoder or self._exported() or self.encoder
        return self._query_encoder

    def _exported(self):
        from mmindex.models import exported

        found = exported.load(self.manifest.model.fingerprint)
        if found is None and exported.enabled():  # (else no torch model is loaded for it)
            found = exported.export_and_load(self.encoder)
        return found

    def rows(self, table: str) -> pa.Table:
        """The table's rows at this generation, without the embeddings."""
        if table not in self._rows:
            schema = table_schema(table, self.manifest.model.dim)
            keep = [c for c in schema.names if c != "embedding"]
            self._rows[table] = store.read_table(self.root, self.manifest, table, columns=keep)
        return self._rows[table]

    def row(self, table: str, row_id: int) -> dict | None:
        """One row of this generation by its id (without the embedding), or None."""
        rows = self.rows(table)
        matches = rows.filter(pc.equal(rows.column("id"), row_id)).to_pylist()
        return matches[0] if matches else None

    def vectors(self, table: str) -> VectorIndex:
        if table not in self._vectors:
            self._vectors[table] = store.read_vectors(self.root, self.manifest, table)
        return self._vectors[table]

    # -- queries -------------------------------------------------------------------------
    def embed_text(self, text: str) -> np.ndarray:
        if not text.strip():
            raise UserInputError("the query text is empty")
        return self.query_encoder.encode_texts([text])[0]  # (D,)

    def embed_image(self, path: str | Path) -> np.ndarray:
        from mmindex.data.batches import load_pixels

        encoder = self.query_encoder
        loaded = load_pixels([path], encoder.preprocess, encoder.info.image_size)
        if loaded.failures:
            raise UserInputError(f"cannot use {path} as a query image: "
                                 f"{loaded.failures[0].reason}")
        return encoder.encode_images(loaded.pixels)[0]  # (D,)

    def search(self, query: str | None = None, *, image: str | Path | None = None,
               vector: np.ndarray | None = None, plus: Sequence[str | Path] = (),
               minus: Sequence[str | Path] = (), k: int = 10, target: str = "images",
               where: str | None = None, min_score: float | None = None,
               sort: str | None = None, mode: str | None = None,
               tiles: bool | None = None, rerank: int = 0) -> list[Hit]:
        """At most one of query (text), image (a file) or vector, plus or minus other texts
        (str) and images (Path); the query text may carry its own terms, `beach +sunset
        -people` (search/query.py). The top k of `target`, best first, or ordered by a
        column of theirs with `sort` ("taken" oldest first, "-taken" newest first; unknown
        values last either way). A hit's rank stays its place by similarity.

        `mode`: "vector" (embeddings; score: cosine), "lexical" (BM25 over the texts; on
        images, over each page's text layer; score: BM25) or "hybrid" (both, merged by
        reciprocal rank fusion; score: the fused one): search/lexical.py. None picks hybrid
        for a text query over texts without min_score (a cosine threshold), else vector.
        In vector mode, images with tile vectors are searched through them too (`tiles`:
        None when the index has them; the hit's `box` is the tile), and `rerank` > 0
        re-scores that many candidates by MaxSim over their tiles (search/tiles.py)."""
        if target not in SEARCH_TABLES:
            raise UserInputError(
                f"target must be one of {', '.join(SEARCH_TABLES)}, not {target!r}")
        if k < 1:
            raise UserInputError(f"k must be at least 1, not {k}")
        tiled = self._tile_options(target, tiles, rerank)
        sort_key = self._sort_key(target, sort) if sort else None  # refused before encoding
        mode = self._resolved_mode(mode, target, query, image, vector, [*plus, *minus],
                                   min_score)
        if mode != "vector" and (tiles or rerank):
            raise UserInputError(f"tiles and the re-rank score by vectors: use --mode vector, "
                                 f"not {mode}")
        if mode != "lexical":
            vector = self._query_vector(query, image, vector, list(plus), list(minus))
        allowed = self.filter_ids(target, where) if where else None
        if allowed is not None and len(allowed) == 0:
            return []
        if mode == "vector" and tiled:
            from mmindex.search.tiles import search_images

            found = search_images(self, vector, k, allowed, *tiled)
            hits = self._hits(target, [f.score for f in found], [f.id for f in found], min_score,
                              {f.id: f.box for f in found})
        elif mode == "vector":
            scores, ids = self.vectors(target).search(vector[None, :], k, allowed)  # (1, k) each
            hits = self._hits(target, scores[0], ids[0], min_score)
        else:
            words = parse_query(query)
            scores, ids = self._ranked(mode, target, vector, k, allowed,
                                       " ".join([words.base, *words.plus, *plus]),
                                       [*words.minus, *minus])
            hits = self._hits(target, scores, ids, None)
        return sort_key(hits) if sort_key else hits

    # -- lexical and hybrid (search/lexical.py) ------------------------------------------
    def _resolved_mode(self, mode, target, query, image, vector, terms, min_score) -> str:
        text_only = (query is not None and image is None and vector is None
                     and not any(isinstance(t, Path) for t in terms))
        if mode is None:
            return "hybrid" if target == "texts" and text_only and min_score is None \
                else "vector"
        if check_mode(mode) != "vector" and not text_only:
            raise UserInputError(f"--mode {mode} searches by words: give a query text, "
                                 "without an image or a vector (or use --mode vector)")
        if mode != "vector" and min_score is not None:
            raise UserInputError(f"--min-score is a cosine similarity, which --mode {mode} "
                                 "does not rank by: leave it out or use --mode vector")
        return mode

    def lexical(self) -> LexicalIndex:
        """BM25 over this generation's texts, built on first use and kept with the
        generation (a commit makes a new Index: reopened())."""
        if self._lexical is None:
            rows = self.rows("texts")
            self._lexical = LexicalIndex(_int64_values(rows.column("id")),
                                         rows.column("text").to_pylist())
        return self._lexical

    def _ranked(self, mode, target, vector, k, allowed, words, excluded):
        """(scores, ids) by BM25, or by RRF of BM25 and the vectors."""
        depth = k if mode == "lexical" else max(k, FUSION_DEPTH)
        lexical_scores, lexical_ids = self._lexical_ranking(target, words, excluded, depth,
                                                            allowed)
        if mode == "lexical":
            return lexical_scores, lexical_ids
        _, vector_ids = self.vectors(target).search(vector[None, :], depth, allowed)
        fused = reciprocal_rank_fusion([vector_ids[0][vector_ids[0] >= 0], lexical_ids], k)
        return [f.score for f in fused], [f.id for f in fused]

    def _lexical_ranking(self, target, words, excluded, depth, allowed):
        """texts: BM25 over the rows; images: each page ranked by its best text row (the
        rows of the same path whose key is its page, "p. N": the PDF's text layer)."""
        if target == "texts":
            return self.lexical().search(words, depth, allowed, excluded)
        scores, text_ids = self.lexical().search(words, len(self.lexical()), None, excluded)
        keys = self._rows_by_id("texts", text_ids.tolist())
        pages = self._pages_by_text_link()
        admitted = None if allowed is None else set(allowed.tolist())
        best: dict[int, float] = {}
        for score, text_id in zip(scores, text_ids):
            row = keys[int(text_id)]
            for image_id in pages.get((row["path"], page_of_key(row["key"])), ()):
                if admitted is None or image_id in admitted:
                    best.setdefault(image_id, float(score))
        ranked = list(best.items())[:depth]
        return [s for _, s in ranked], [i for i, _ in ranked]

    def _pages_by_text_link(self) -> dict[tuple[str, int | None], list[int]]:
        """Image ids by (path, page): page is the images row's `page` when the table has
        one (a PDF page), else None. Kept with the generation."""
        if self._pages is None:
            rows = self.rows("images")
            paths = rows.column("path").to_pylist()
            pages = (rows.column("page").to_pylist() if "page" in rows.column_names
                     else [None] * len(paths))
            self._pages = {}
            for row_id, path, page in zip(rows.column("id").to_pylist(), paths, pages):
                self._pages.setdefault((path, page), []).append(row_id)
        return self._pages

    def _tile_options(self, target: str, tiles: bool | None, rerank: int):
        """(use tiles, rerank depth) for search/tiles.py, or None for the plain search."""
        from mmindex.search.tiles import has_tiles, require_tiles

        if rerank < 0:
            raise UserInputError(f"rerank must be 0 (off) or a number of candidates, not {rerank}")
        if target != "images":
            if tiles or rerank:
                raise UserInputError("tiles and the re-rank apply to image searches only")
            return None
        if tiles or rerank:
            require_tiles(self, "--rerank" if rerank else "--tiles")
        use = has_tiles(self) if tiles is None else tiles
        return (use, rerank) if use or rerank else None

    def _sort_key(self, target: str, sort: str):
        """A function ordering hits by `sort`: a column of `target` (or "score"), with a
        leading "-" for descending; unknown (null) values go last in both directions."""
        column = sort.strip().removeprefix("-").strip()
        descending = sort.strip().startswith("-")
        columns = [c for c in self.rows(target).column_names if c != "embedding"] + ["score"]
        if column not in columns:
            raise UserInputError(f"cannot sort by {sort!r}: give a column of {target} "
                                 f"({', '.join(columns)}), with a leading '-' for descending")

        def ordered(hits: list[Hit]) -> list[Hit]:
            rows = self._rows_by_id(target, [h.id for h in hits]) if column != "score" else {}
            values = {h.id: h.score if column == "score" else rows[h.id][column] for h in hits}
            known = sorted((h for h in hits if values[h.id] is not None),
                           key=lambda h: values[h.id], reverse=descending)
            return known + [h for h in hits if values[h.id] is None]
        return ordered

    def query_vector(self, query: str | None = None, *, image: str | Path | None = None,
                     plus: Sequence[str | Path] = (), minus: Sequence[str | Path] = ()):
        """The unit vector a search with these arguments looks for, (D,)."""
        return self._query_vector(query, image, None, list(plus), list(minus))

    def _query_vector(self, query, image, vector, plus: list, minus: list) -> np.ndarray:
        parsed = parse_query(query) if query is not None else ParsedQuery("")
        if query is not None and not query.strip():
            raise UserInputError("the query text is empty")
        given = [x for x in (parsed.base or None, image, vector) if x is not None]
        terms = [*parsed.plus, *plus, *parsed.minus, *minus]
        if len(given) > 1 or not (given or terms):
            raise UserInputError("search by one thing: a text, or an image (--image), not "
                                 "both and not neither (to add a text to an image: --plus)"
                                 if vector is None else
                                 "give exactly one of a query text, an image or a vector")
        if vector is not None and not terms:
            return self._checked_vector(vector)  # as given: no embedding, no model
        positive = [self._checked_vector(vector)] if vector is not None else []
        positive += [self.embed_text(parsed.base)] if parsed.base else []
        positive += [self.embed_image(image)] if image is not None else []
        positive += [self._embed_term(t) for t in [*parsed.plus, *plus]]
        negative = [self._embed_term(t) for t in [*parsed.minus, *minus]]
        if len(positive) == 1 and not negative:
            return positive[0]  # one embedding, already a unit vector
        return combine(positive, negative)

    def _embed_term(self, term: str | Path) -> np.ndarray:
        """A Path is an image file; a str is a text."""
        return self.embed_image(term) if isinstance(term, Path) else self.embed_text(term)

    def _checked_vector(self, vector) -> np.ndarray:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.manifest.model.dim:
            raise UserInputError(f"vector has {vector.shape[0]} dimensions; the index has "
                                 f"{self.manifest.model.dim}")
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def filter_ids(self, target: str, where: str, timeout_s: float | None = None) -> np.ndarray:
        """Ids of the rows a SQL predicate admits, run by DuckDB over this generation's rows.
        The predicate must parse as one expression in a WHERE clause (checked on DuckDB's own
        parse tree, so it cannot close a parenthesis and append a UNION); the database sees
        only the in-memory rows, with file access off and memory and threads bounded; and
        the caller gets an answer within `timeout_s` whatever DuckDB is doing."""
        import duckdb

        timeout_s = self.where_timeout_s if timeout_s is None else timeout_s
        con = duckdb.connect(config=WHERE_SETTINGS)
        try:
            query = _checked_where_query(con, target, where)
            con.register(target, self.rows(target))
        except duckdb.Error as exc:
            con.close()
            raise self._unusable(target, where, exc) from None
        except BaseException:
            con.close()
            raise
        return _ids_within(con, query, where, timeout_s, lambda exc: self._unusable(
            target, where, exc))

    def _unusable(self, target: str, where: str, exc: Exception) -> UserInputError:
        columns = ", ".join(self.rows(target).column_names)
        return UserInputError(f"--where {where!r} is not a usable predicate: "
                              f"{str(exc).splitlines()[0]} (columns: {columns})")

    def _hits(self, target: str, scores, ids, min_score, boxes=None) -> list[Hit]:
        found = [(float(s), int(i)) for s, i in zip(scores, ids) if i >= 0]
        if min_score is not None:
            found = [(s, i) for s, i in found if s >= min_score]
        rows = self._rows_by_id(target, [i for _, i in found])
        hits = []
        for rank, (score, row_id) in enumerate(found, start=1):
            row = rows[row_id]
            taken = row.get("taken")
            hits.append(Hit(rank, row_id, score, row["path"], target, text=row.get("text"),
                            key=row.get("key"), width=row.get("width"), height=row.get("height"),
                            page=row.get("page"),
                            taken=taken.isoformat() if taken is not None else None,
                            camera=row.get("camera"), lens=row.get("lens"),
                            latitude=row.get("latitude"), longitude=row.get("longitude"),
                            box=(boxes or {}).get(row_id)))
        return hits

    def _rows_by_id(self, target: str, ids: list[int]) -> dict[int, dict]:
        """The hits' rows, found by position and sliced out: Table.filter, pa.array and
        to_numpy each import pandas on first use, 0.8 s of a cold search."""
        table = self.rows(target)
        positions = np.flatnonzero(np.isin(_int64_values(table.column("id")), ids))
        rows = (table.slice(int(p), 1).to_pylist()[0] for p in positions)
        return {row["id"]: row for row in rows}

    # -- description ---------------------------------------------------------------------
    def info(self, max_errors: int = 50) -> IndexInfo:
        tables = {}
        for name, state in self.manifest.tables.items():
            kind = self.vectors(name).kind if name in VECTOR_TABLES else None
            tables[name] = TableInfo(state.rows, len(state.shards), self._shard_bytes[name], kind)
        errors = self.rows("errors").select(["path", "table", "reason"]).to_pylist()[:max_errors]
        model = self.manifest.model
        return IndexInfo(str(self.root), model.spec, model.dim, model.fingerprint,
                         self.manifest.generation, tables, errors)


def _shards(manifest, table: str) -> tuple[str, ...] | None:
    state = manifest.tables.get(table)
    return state.shards if state else None


# -- --where, checked and bounded ---------------------------------------------------------
def _checked_where_query(con, target: str, where: str) -> str:
    """`SELECT id FROM target WHERE <where>`, once DuckDB's parser says that is exactly what
    it is: the same statement as `SELECT id FROM target` but for its WHERE clause. The text
    is not wrapped in parentheses, so there is nothing to close; a UNION, ORDER BY, LIMIT,
    GROUP BY, a second statement or a parameter changes the tree and is refused."""
    if len(con.extract_statements(f"SELECT id FROM {target} WHERE ({where})")) != 1:
        raise UserInputError(f"--where takes one SQL predicate, not statements: {where!r}")
    query = f"SELECT id FROM {target} WHERE {where}"
    parsed, bare = _parse(con, query), _parse(con, f"SELECT id FROM {target}")
    if parsed.get("error"):
        raise UserInputError(f"--where {where!r} is not a usable predicate: "
                             f"{parsed.get('error_message', 'it does not parse')}")
    statements = parsed["statements"]
    if len(statements) != 1 or statements[0]["node"].get("where_clause") is None:
        raise _not_one_expression(where)
    shape = dict(statements[0]["node"], where_clause=None)
    if shape != bare["statements"][0]["node"] or statements[0].get("named_param_map"):
        raise _not_one_expression(where)
    return query


def _parse(con, sql: str) -> dict:
    import json

    return json.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchall()[0][0])


def _not_one_expression(where: str) -> UserInputError:
    return UserInputError(f"--where {where!r} is not one predicate: it reaches past its WHERE "
                          "clause (a UNION, ORDER BY, LIMIT, GROUP BY or a parameter); give a "
                          "condition on the columns, e.g. \"width > 1000\"")


def _ids_within(con, query: str, where: str, timeout_s: float, unusable) -> np.ndarray:
    """Run the query on a thread of its own and wait at most `timeout_s` (+ a grace after
    the interrupt): a call inside DuckDB that never checks for interrupts (one huge
    repeat()) cannot hold the caller. That thread closes the connection when DuckDB lets go."""
    import threading

    import duckdb

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["ids"] = con.execute(query).fetchnumpy()["id"]
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            con.close()

    worker = threading.Thread(target=run, name="mmindex-where", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        con.interrupt()
        worker.join(WHERE_GRACE_S)
    if worker.is_alive() or isinstance(outcome.get("error"), duckdb.InterruptException):
        raise UserInputError(f"--where {where!r} ran longer than {timeout_s:g} s and was "
                             "stopped: filter on the columns directly")
    if "error" in outcome:
        if isinstance(outcome["error"], duckdb.Error):
            raise unusable(outcome["error"])
        raise outcome["error"]
    ids = outcome["ids"]
    if not np.issubdtype(ids.dtype, np.integer):  # the parse check makes it the int64 id
        raise UserInputError(f"--where {where!r} did not select the integer id column")
    return ids.astype(np.int64)


def _int64_values(column: pa.ChunkedArray) -> np.ndarray:
    """A null-free int64 column as numpy, read from its buffers (see _rows_by_id)."""
    if column.null_count:
        return column.to_numpy()
    parts = [np.frombuffer(chunk.buffers()[1], np.int64, len(chunk), chunk.offset * 8)
             for chunk in column.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)

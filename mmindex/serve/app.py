"""The HTTP API and the web page: request -> library call -> JSON. No search logic lives here.

    create_app(index_dir, token=None, ingest_roots=()) -> FastAPI

Every library error is a typed MmindexError; `_ERROR_STATUS` maps each type to an HTTP
status in one place, and every error response is `{"error": code, "message": text}`."""

from __future__ import annotations

import hmac
import io
import json
import logging
import mimetypes
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmindex import errors
from mmindex.data.images import DecodeError, decode_image
from mmindex.data.tiles import MAX_BUDGET
from mmindex.index.files import read_indexed_file
from mmindex.ingestion.config import IngestConfig
from mmindex.search.searcher import Index
from mmindex.serve.answers import Answers, AnswersUnavailable
from mmindex.serve.filters import FILTER_HELP, compile_filters
from mmindex.serve.jobs import IngestJobs, JobConflict
from mmindex.serve.limits import BodySizeLimit, HostCheck, SecurityHeaders
from mmindex.serve.live import LiveIndex
from mmindex.serve.thumbs import thumbnail_jpeg
from mmindex.serve.watching import DEFAULT_SETTLE_S, FolderWatch

log = logging.getLogger("mmindex.serve")

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a phone photo is 3-12 MB
MAX_K = 200  # a page of thumbnails, not a bulk export

# Library error type -> (status, code). Subclasses before their bases: the first match wins.
_ERROR_STATUS: list[tuple[type[errors.MmindexError], int, str]] = [
    (errors.IndexLockedError, 409, "index_locked"),
    (errors.ModelMismatchError, 409, "model_mismatch"),
    (errors.UserInputError, 400, "bad_request"),
    (errors.IndexFormatError, 503, "no_index"),
    (errors.ModelError, 503, "model_unavailable"),
    (errors.MmindexError, 500, "error"),
]
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large",
               415: "unsupported_media_type", 501: "not_implemented", 503: "unavailable"}


_DECIMAL = re.compile(r"[0-9]+")


def is_decimal(text: str) -> bool:
    """ASCII digits only: Python's int() (and pydantic's) also takes ' 5', '5_0', '+5' and
    other scripts' digits, so a URL could name one row in many spellings."""
    return _DECIMAL.fullmatch(text) is not None


def _decimal_only(value):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a whole number in decimal digits")
    if isinstance(value, str) and not is_decimal(value):
        raise ValueError("must be decimal digits (0-9) only")
    return value


# Every integer a request carries (k, like): JSON ints as they are, strings digits only.
DecimalInt = Annotated[int, BeforeValidator(_decimal_only)]


class ApiError(StarletteHTTPException):
    """An HTTP-level refusal decided here (unknown id, oversize upload...), with its code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers=None):
        super().__init__(status, message, headers)
        self.code = code or _HTTP_CODES.get(status, "error")


# -- response shapes (they document /openapi.json) ------------------------------------------
class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code, e.g. not_found")
    message: str = Field(description="what went wrong, for a person")


class HitOut(BaseModel):
    rank: int
    id: int
    score: float
    path: str
    table: str
    text: str | None = None
    key: str | None = None
    width: int | None = None
    height: int | None = None
    page: int | None = Field(None, description="a PDF's page (1-based); path is the PDF's")
    taken: str | None = None  # from EXIF: ISO 8601, the camera's clock
    camera: str | None = None
    lens: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    box: list[int] | None = Field(None, description="images: the tile that matched, "
                                  "[x0, y0, x1, y1] in the image's pixels")
    image_url: str | None = None
    thumb_url: str | None = None


class SearchOut(BaseModel):
    target: str
    generation: int
    hits: list[HitOut]


class StatusOut(BaseModel):
    ready: bool = Field(description="an index exists and can be searched")
    message: str | None = None
    index: dict | None = Field(None, description="model, dim, generation, tables, errors")
    jobs: list[dict] = Field(description="recent ingest jobs, newest first")
    ingest_roots: list[str]
    ask_available: bool
    ask_message: str | None = Field(None, description="why asking cannot work here, if not")
    token_required: bool
    watch: dict | None = Field(None, description="with --watch: roots, ingests, last (added, "
                                                  "removed), error, running")


class IngestIn(BaseModel):
    roots: list[str] | None = Field(None, description="configured roots to ingest; all if omitted")


class AskIn(BaseModel):
    question: str = Field(min_length=1, max_length=2000)
    k: DecimalInt = Field(3, ge=1, le=20)
    filter: list[str] = Field(default_factory=list, description=FILTER_HELP)
    joint: bool = Field(False, description="one prompt with all k images instead of asking "
                                           "each image alone (one cited line each)")
    tiles: DecimalInt = Field(0, ge=0, le=MAX_BUDGET, description=(
        "also show each image's N tiles that best match the question (an index ingested "
        "with tiles; not with joint): `ask --tiles N`"))


def _errors(*statuses: int) -> dict:
    return {s: {"model": ErrorBody} for s in statuses}


# -- per-app state -----------------------------------------------------------------------
@dataclass
class ServeContext:
    live: LiveIndex
    jobs: IngestJobs
    token: str | None
    ingest_roots: tuple[Path, ...]
    max_upload_bytes: int
    answers: Answers
    watch: FolderWatch | None = None


def _context(request: Request) -> ServeContext:
    return request.app.state.mmindex


_bearer = HTTPBearer(auto_error=False, description="`--token` of `mmindex serve`, if set")


Context = Annotated[ServeContext, Depends(_context)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _require_token(ctx: Context, credentials: Credentials) -> None:
    if ctx.token is None:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), ctx.token.encode()):
        raise ApiError(401, "this server needs 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})


api = APIRouter(prefix="/api", dependencies=[Depends(_require_token)],
                responses=_errors(400, 401, 503))


# -- search ------------------------------------------------------------------------------
Target = Literal["images", "texts"]
K = Annotated[DecimalInt, Query(ge=1, le=MAX_K, description="number of results")]
TargetParam = Annotated[Target, Query(description="which table to search")]
MinScore = Annotated[float | None, Query(ge=-1.0, le=1.0, description="drop hits below this")]
Filters = Annotated[list[str], Query(alias="filter", description=FILTER_HELP)]
Sort = Annotated[str | None, Query(max_length=40, pattern=r"^-?[a-z_]+$", description=(
    "order the k results by a column: taken (oldest first), -taken (newest first); "
    "unknown last. Default: by score"))]
Mode = Annotated[Literal["vector", "lexical", "hybrid"] | None, Query(description=(
    "vector (score: cosine), lexical (BM25 over texts, or over a page's text layer; score: "
    "BM25) or hybrid (reciprocal rank fusion of both). Default: hybrid for q over texts "
    "without min_score, else vector"))]
Rerank = Annotated[DecimalInt, Query(ge=0, le=MAX_K, description=(
    "re-score this many top images by MaxSim over their tiles (an index with tiles); 0: off"))]


@api.get("/search", response_model=SearchOut, response_model_exclude_none=True,
         responses=_errors(404, 409))
def search_get(
    ctx: Context,
    q: Annotated[str | None, Query(max_length=1000, description="text to search for")] = None,
    like: Annotated[DecimalInt | None, Query(description="id of an indexed image: find similar "
                                      "ones")] = None,
    k: K = 12, target: TargetParam = "images", min_score: MinScore = None, filters: Filters = (),
    sort: Sort = None, mode: Mode = None, rerank: Rerank = 0,
) -> dict:
    """Text search (`q`), or search by an indexed image (`like`): give exactly one. An index
    with tiles is searched through them too (a hit's `box` is the tile that matched)."""
    if (q is None) == (like is None):
        raise ApiError(400, "give exactly one of q (text) or like (an image id)")
    index = ctx.live.get()
    where = compile_filters(target, filters)
    if q is not None:
        hits = index.search(q, k=k, target=target, where=where, min_score=min_score, sort=sort,
                            mode=mode, rerank=rerank)
    else:
        image = _image_file(index, like)
        hits = index.search(image=image, k=k, target=target, where=where, min_score=min_score,
                            sort=sort, mode=mode, rerank=rerank)
    return _search_out(index, target, hits)


@api.post("/search", response_model=SearchOut, response_model_exclude_none=True,
          responses=_errors(413, 415))
def search_post(
    ctx: Context,
    image: Annotated[UploadFile, File(description="the query image (JPEG, PNG, WebP...)")],
    k: K = 12, target: TargetParam = "images", min_score: MinScore = None, filters: Filters = (),
    sort: Sort = None,
) -> dict:
    """Search by an uploaded image, decoded with the same limits as ingest."""
    index = ctx.live.get()
    where = compile_filters(target, filters)
    with tempfile.TemporaryDirectory(prefix="mmindex-upload-") as scratch:
        query = _save_upload(image, Path(scratch) / "query", ctx.max_upload_bytes)
        _check_decodable(query, index, image.filename)
        hits = index.search(image=query, k=k, target=target, where=where, min_score=min_score,
                            sort=sort)
    return _search_out(index, target, hits)


def _save_upload(upload: UploadFile, destination: Path, max_bytes: int) -> Path:
    written = 0
    with destination.open("wb") as out:
        while chunk := upload.file.read(1 << 20):
            written += len(chunk)
            if written > max_bytes:  # BodySizeLimit stops most; this catches the rest
                raise ApiError(413, f"the upload is larger than {max_bytes} bytes")
            out.write(chunk)
    return destination


def _check_decodable(path: Path, index: Index, filename: str | None) -> None:
    """415 unless the upload decodes under the ingest limits (bomb guard included)."""
    try:
        decode_image(path, index.manifest.model.image_size, IngestConfig.max_pixels)
    except DecodeError as exc:
        raise ApiError(415, f"{filename or 'the upload'} is not a usable image: {exc}") from None


def _search_out(index: Index, target: str, hits) -> dict:
    return {"target": target, "generation": index.manifest.generation,
            "hits": [_hit_out(h) for h in hits]}


def _hit_out(hit) -> dict:
    out = hit.to_dict()
    if hit.table == "images":  # a PDF page: the PDF, opened at the page by the browser
        out["image_url"] = f"/api/images/{hit.id}" + (f"#page={hit.page}" if hit.page else "")
        out["thumb_url"] = f"/api/images/{hit.id}/thumb"
    return out


# -- images, by id only ------------------------------------------------------------------
def _image_row(index: Index, image_id: int | str) -> dict:
    """The row of an image of this index; 404 for anything else. A request names a row id,
    never a path, so no request can reach a file the index does not hold."""
    if not is_decimal(str(image_id)):
        raise ApiError(404, f"no image with id {str(image_id)[:40]!r}: ids are decimal digits")
    row_id = int(image_id)
    if not -(2**63) <= row_id < 2**63:  # ids are int64; anything else names no row
        raise ApiError(404, f"no image with id {row_id}")
    row = index.row("images", row_id)
    if row is None:
        raise ApiError(404, f"no image with id {row_id} in this index")
    return row


def _checked(row: dict, read):
    """`read(row)` of a file that must still be the indexed one: 404 when it is gone, 409
    (`file_changed`) when another file sits at its path (a re-pointed symlink, an edit)."""
    try:
        return read(row)
    except FileNotFoundError:
        raise ApiError(404, f"image {row['id']} is gone from disk; re-ingest to drop it") from None
    except OSError as exc:  # a permission taken away, a symlink loop...
        raise ApiError(404, f"image {row['id']} cannot be read: {exc.strerror or exc}") from None
    except errors.SourceFileChangedError as exc:
        raise ApiError(409, f"the file of image {row['id']} {exc} since it was indexed; "
                       "re-ingest to index what is there now", code="file_changed") from None


def _image_file(index: Index, image_id: int | str) -> Path:
    """The path of an image row, once its file is checked to be the indexed one."""
    row = _image_row(index, image_id)
    _checked(row, read_indexed_file)
    return Path(row["path"])


@api.get("/images/{image_id}", responses=_errors(404, 409),
         response_class=Response, response_description="the original file")
def image_file(image_id: str, ctx: Context) -> Response:
    """The original file of an indexed image, by its row id: the very bytes that were checked
    against the indexed size, mtime and SHA-256."""
    row = _image_row(ctx.live.get(), image_id)
    data = _checked(row, read_indexed_file)
    media_type = mimetypes.guess_type(row["path"])[0] or "application/octet-stream"
    return Response(data, media_type=media_type,
                    headers={"Cache-Control": "private, max-age=60",
                             "Content-Disposition": "inline"})


@api.get("/images/{image_id}/thumb", responses=_errors(404, 409),
         response_class=Response, response_description="a JPEG of at most 256 px a side")
def image_thumb(image_id: str, ctx: Context) -> Response:
    """A small JPEG of an indexed image, by its row id."""
    row = _image_row(ctx.live.get(), image_id)
    try:
        jpeg = _checked(row, thumbnail_jpeg)
    except (DecodeError, OSError) as exc:
        raise ApiError(404, f"image {image_id} no longer decodes: {exc}") from None
    return Response(jpeg, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=60"})


# -- where in the image ---------------------------------------------------------------------
HEATMAP_SIDE = 512  # the heatmap PNG's long side: a result's size on the page, not the photo's
Query_q = Annotated[str, Query(min_length=1, max_length=1000, description="the text query")]


class TileScore(BaseModel):
    box: list[int] = Field(description="[x0, y0, x1, y1] in the image's pixels")
    score: float


class HeatmapOut(BaseModel):
    id: int
    width: int
    height: int
    grid: list[list[float | None]] = Field(description="rows x cols mean tile score per cell "
                                           "(null: no tile covers it)")
    tiles: list[TileScore]
    whole: float = Field(description="the query's score with the whole-image vector")


@api.get("/heatmap", response_model=HeatmapOut, responses=_errors(404))
def heatmap_json(id: str, q: Query_q, ctx: Context) -> dict:
    """Where in image `id` the text `q` matches: the query's score on each of the image's
    tiles, and as a grid over the image (16 cells along its long side)."""
    from mmindex.search.tiles import heatmap

    index = ctx.live.get()
    row = _image_row(index, id)
    return heatmap(index, row["id"], index.query_vector(q)).to_dict()


@api.get("/heatmap.png", responses=_errors(404, 409), response_class=Response,
         response_description="the image (at most 512 px a side) with the heatmap drawn over it")
def heatmap_png(id: str, q: Query_q, ctx: Context) -> Response:
    """The image with the text query's heatmap over it: red where it matches best."""
    from mmindex.search import tiles

    index = ctx.live.get()
    row = _image_row(index, id)
    try:  # the checked file (or its PDF page), shrunk as a thumbnail is
        jpeg = _checked(row, lambda r: thumbnail_jpeg(r, HEATMAP_SIDE))
    except (DecodeError, OSError) as exc:
        raise ApiError(404, f"image {id} no longer decodes: {exc}") from None
    from PIL import Image

    picture = Image.open(io.BytesIO(jpeg)).convert("RGB")
    heat = tiles.heatmap(index, row["id"], index.query_vector(q))
    png = tiles.heatmap_png(picture, heat, HEATMAP_SIDE)  # the box space's shape, a page's too
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


# -- duplicates ----------------------------------------------------------------------------
MAX_DUPLICATE_GROUPS = 500  # a page of groups; `mmindex duplicates --json` has them all


@api.get("/duplicates")
def duplicates(
    ctx: Context,
    threshold: Annotated[float | None, Query(description=(
        "cosine similarity in (0, 1] at or above which two images are near duplicates; "
        "default 0.95; 1 keeps only identical files"))] = None,
    limit: Annotated[DecimalInt, Query(ge=1, le=MAX_DUPLICATE_GROUPS,
                                       description="most groups returned")] = 100,
) -> dict:
    """Groups of identical files (same SHA-256) and near-identical images, as
    `mmindex duplicates --json`, the first `limit` of them, each file with its thumbnail."""
    from mmindex.search.duplicates import find_duplicates

    # the library checks the threshold (UserInputError -> 400), so CLI and API say the same
    report = find_duplicates(ctx.live.get(), *([threshold] if threshold is not None else []))
    out = report.to_dict()
    out["total_groups"] = len(out["groups"])
    out["groups"] = out["groups"][:limit]
    for group in out["groups"]:
        for f in group["files"]:
            f["thumb_url"] = f"/api/images/{f['id']}/thumb"
    return out


# -- status and ingest -------------------------------------------------------------------
@api.get("/status", response_model=StatusOut)
def status(ctx: Context) -> dict:
    """Model, row counts, generation and recent ingest jobs."""
    out = {"jobs": ctx.jobs.snapshot(), "ingest_roots": [str(r) for r in ctx.ingest_roots],
           "ask_available": ctx.answers.available(), "token_required": ctx.token is not None,
           "watch": ctx.watch.snapshot() if ctx.watch else None}
    try:
        out.update(ready=True, index=_index_info(ctx.live))
        reason = ctx.answers.unavailable_reason(ctx.live.get())
        out.update(ask_available=reason is None, ask_message=reason)
    except errors.IndexFormatError as exc:
        out.update(ready=False, message=str(exc))
    return out


def _index_info(live: LiveIndex, attempts: int = 3) -> dict:
    """info() stats the snapshot's shards; a commit landing meanwhile deletes the old ones,
    and then the manifest has changed too, so the next get() opens the new generation."""
    for attempt in range(attempts):
        try:
            return live.get().info(max_errors=20).to_dict()
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise


@api.post("/ingest", status_code=202, responses=_errors(409))
def start_ingest(ctx: Context, request: Annotated[IngestIn | None, Body()] = None) -> dict:
    """Start ingesting configured roots in the background; progress shows in /api/status."""
    if not ctx.ingest_roots:
        raise ApiError(409, "this server has no ingest roots; start it with --ingest-root DIR",
                       code="no_ingest_roots")
    try:
        roots = _chosen_roots(request.roots if request else None, ctx.ingest_roots)
        return ctx.jobs.start(roots).to_dict()
    except JobConflict as exc:
        raise ApiError(409, str(exc), code="ingest_running") from None


def _chosen_roots(asked: list[str] | None, configured: tuple[Path, ...]) -> list[Path]:
    """Roots are picked from the server's own list by name: a request never adds a path."""
    if asked is None:
        return list(configured)
    by_name = {str(root): root for root in configured}
    unknown = [a for a in asked if a not in by_name]
    if unknown or not asked:
        raise ApiError(400, f"roots must be among the configured ones: {', '.join(by_name)}")
    return [by_name[a] for a in asked]


# -- answers -------------------------------------------------------------------------------
_EVENT_STREAM = "text/event-stream"
_ASK_RESPONSES = _errors(501) | {200: {"description": (
    "The answer as JSON; or, when the request's Accept header asks for text/event-stream, "
    "server-sent events: `token` events ({text}) while the answer is generated, then one "
    "`answer` event (the same JSON), or an `error` event ({error, message}) if it fails."),
    "content": {_EVENT_STREAM: {"schema": {"type": "string"}}}}}


@api.post("/ask", responses=_ASK_RESPONSES)
def ask(question: AskIn, ctx: Context, request: Request) -> Response:
    """Answer a question from retrieved images, citing them (mmindex.ask.generator).
    501 where it is not installed, 503 where it cannot load for this index."""
    index = ctx.live.get()
    where = compile_filters("images", question.filter)
    try:
        if _EVENT_STREAM in request.headers.get("accept", ""):
            events = ctx.answers.stream(index, question.question, k=question.k, where=where,
                                        joint=question.joint, tiles=question.tiles)
            return StreamingResponse(_server_sent(events), media_type=_EVENT_STREAM,
                                     headers={"Cache-Control": "no-store"})
        return JSONResponse(ctx.answers.ask(index, question.question, k=question.k, where=where,
                                            joint=question.joint, tiles=question.tiles))
    except AnswersUnavailable as exc:
        code = "not_implemented" if exc.status == 501 else "generator_unavailable"
        raise ApiError(exc.status, str(exc), code=code) from None


def _server_sent(events) -> Iterator[str]:
    """Each event as `event:`/`data:` lines (JSON data holds no newline). A failure after the
    status line went out can only be told in the stream: an `error` event."""
    try:
        for name, data in events:
            yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
    except Exception as exc:
        status, code = _status_of(exc)
        log.log(logging.ERROR if status >= 500 else logging.INFO, "ask stream failed: %r", exc)
        message = str(exc) if isinstance(exc, errors.MmindexError) else type(exc).__name__
        yield f"event: error\ndata: {json.dumps({'error': code, 'message': message})}\n\n"


# -- error mapping: the one place where types become statuses ---------------------------
def _error_response(status: int, code: str, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _status_of(exc: Exception) -> tuple[int, str]:
    return next(((s, c) for kind, s, c in _ERROR_STATUS if isinstance(exc, kind)),
                (500, "internal"))


async def _library_error(request: Request, exc: errors.MmindexError) -> JSONResponse:
    status, code = _status_of(exc)
    if status >= 500:
        log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc)
    return _error_response(status, code, str(exc))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = getattr(exc, "code", None) or _HTTP_CODES.get(exc.status_code, "error")
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return _error_response(exc.status_code, code, str(exc.detail), headers)


def _allowed_methods(request: Request) -> str:
    """Starlette's Allow names the methods of the first route on the path only; GET and
    POST /api/search are two routes, so gather every route's."""
    path = request.scope["path"]
    return ", ".join(sorted({method for route in request.app.routes
                             if isinstance(route, APIRoute) and route.path_regex.match(path)
                             for method in route.methods}))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                         for e in exc.errors()[:5])
    return _error_response(400, "bad_request", problems or "invalid request")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return _error_response(500, "internal", f"unexpected {type(exc).__name__}; see the log")


# -- the app -----------------------------------------------------------------------------
_STATIC = ("mmindex.serve", "static")


def create_app(index_dir: str | Path, token: str | None = None,
               ingest_roots: Sequence[str | Path] = (), *,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               allowed_hosts: Sequence[str] | None = None, run_ingest=None,
               answers: Answers | None = None, watch_roots: Sequence[str | Path] = (),
               watch_settle_s: float = DEFAULT_SETTLE_S) -> FastAPI:
    """The server of one index directory. `allowed_hosts` (e.g. loopback names) refuses
    other Host headers, which stops DNS-rebinding pages from reading a loopback server.
    `watch_roots` are kept indexed while the app runs (started and stopped by its lifespan)."""
    if run_ingest is None:
        from mmindex.ingestion.run import ingest as run_ingest
    index_dir = Path(index_dir)
    app = FastAPI(title="mmindex", version=_version(), lifespan=_lifespan,
                  docs_url=None, redoc_url=None,  # their pages load assets from a CDN
                  description="Search an image and text collection. Errors are "
                              "{error, message} with the status that fits.")
    app.state.mmindex = ServeContext(
        LiveIndex(index_dir), IngestJobs(index_dir, run_ingest), token,
        tuple(Path(r).expanduser().absolute() for r in ingest_roots), max_upload_bytes,
        answers or Answers())
    if watch_roots:
        app.state.mmindex.watch = FolderWatch(
            index_dir, [Path(r).expanduser().absolute() for r in watch_roots],
            settle_s=watch_settle_s)
    app.include_router(api)
    app.add_api_route("/", _page, include_in_schema=False, response_class=HTMLResponse)
    app.mount("/static", StaticFiles(packages=[_STATIC]), name="static")
    _add_error_handlers(app)
    if token is None:
        _document_no_auth(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_upload_bytes,
                       refuse=lambda: _error_response(
                           413, "too_large", f"the request is larger than {max_upload_bytes} bytes"))
    app.add_middleware(SecurityHeaders)
    if allowed_hosts:
        app.add_middleware(HostCheck, allowed=list(allowed_hosts), refuse=lambda host:
                           _error_response(400, "bad_host", f"this server does not answer to "
                                           f"host {host[:100]!r}"))
    return app


def _document_no_auth(app: FastAPI) -> None:
    """The bearer dependency is on every route, so FastAPI documents it even when the server
    has no token; the schema then promises an auth (and 401s) that this server never asks."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()  # cached by FastAPI in app.openapi_schema: edit it in place
            schema.get("components", {}).pop("securitySchemes", None)
            for operation in (op for path in schema["paths"].values() for op in path.values()):
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
        return app.openapi_schema

    app.openapi = openapi


def _add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.MmindexError, _library_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


def _page() -> HTMLResponse:
    from importlib.resources import files

    return HTMLResponse(files(_STATIC[0]).joinpath(_STATIC[1], "index.html").read_text("utf-8"))


@asynccontextmanager
async def _lifespan(app: FastAPI):
    await _warm_model(app)
    watcher = app.state.mmindex.watch
    if watcher:
        watcher.start()
    try:
        yield
    finally:
        if watcher:
            await _stop_watch(watcher)


async def _warm_model(app: FastAPI) -> None:
    """Load the index and what embeds its queries before the first request, so it is not the
    slow one (the exported model: `ask` loads the torch model when first asked)."""
    import anyio

    def warm():
        try:
            index = app.state.mmindex.live.get()
            _ = index.query_encoder
            if index.rows("texts").num_rows:  # BM25 for the default (hybrid) text search
                index.lexical()
        except errors.MmindexError as exc:  # no index yet, or no model: status will say
            log.warning("not warmed up: %s", exc)

    await anyio.to_thread.run_sync(warm)


async def _stop_watch(watcher: FolderWatch) -> None:
    import anyio

    # in a thread: an ingest under way may take a while to reach its stop check
    if not await anyio.to_thread.run_sync(watcher.stop):
        log.warning("watch: an ingest was still running at shutdown; it ends with the process")


def _version() -> str:
    from mmindex import __version__

    return __version__

"""The creps-serve HTTP application (Starlette): a Deep Zoom pyramid per seed and psi, /info, the viewer.

    GET /seed/{seed}.dzi?psi=0.7                         the DZI descriptor (application/xml)
    GET /seed/{seed}_files/{level}/{col}_{row}.png?psi=  a tile (image/png), rendered for its window
    GET /info                                            model, canvas, backend and cache figures (JSON)
    GET /  and  /static/...                              the viewer (serve/static, built by serve/build.sh)

psi defaults to 1.0; no other query parameter is taken. A tile carries `X-Creps-Window`
(the exact window given to the runtime), a strong `ETag` (from the bundle, precision,
canvas and tile key: creps.serve.tiles) and `Cache-Control: public, max-age=31536000,
immutable`; `If-None-Match` with its ETag is answered 304 before any rendering.

Admission: tiles render on a pool of `workers` threads; at most `workers + queue` tile
renders are admitted at once (running or waiting for a thread), and a request past that is
answered 503 with `Retry-After` at once, so a burst never grows memory. A render whose
client went away still holds its place until it ends: the count is of work, not sockets.

Errors: every refusal is a one-line text body and one log line (`METHOD PATH -> STATUS
reason`), never a traceback: 400 for a malformed number, a seed outside 0..2**32-1 or a
psi not finite or outside [-2, 2]; 404 for a level past the pyramid, a column or row
outside its level, or a path that is not a route; 503 when admission is full or the viewer
is not built; 500 for a renderer that gave NaN or Inf (NonFiniteError's line) or any
other failure (its type and message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from creps.errors import CrepsError
from creps.serve.pyramid import window_header
from creps.serve.tiles import BadTileRequest, TileKey, TileNotFound, TileRenderer

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
VIEWER_LIBRARY = Path("vendor", "openseadragon", "openseadragon.min.js")  # what serve/build.sh installs
IMMUTABLE = "public, max-age=31536000, immutable"
RETRY_AFTER_S = 1
INTEGER = re.compile(r"-?[0-9]+")
DIGITS = 30  # past every range here: refused before int() parses it
SHOWN = 40  # characters of a refused value echoed back


class Busy(CrepsError):
    """Admission is full: workers + queue tile renders are in the system."""


class ViewerNotBuilt(CrepsError):
    """The viewer's vendor files (OpenSeadragon) are not installed into the static folder."""


def shown(text: str) -> str:
    """A request's value as a message quotes it: repr, cut short."""
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def integer(name: str, text: str) -> int:
    """A path's number: ASCII decimal digits, maybe a minus (its range is the renderer's to check)."""
    if not INTEGER.fullmatch(text):
        raise BadTileRequest(f"{name} {shown(text)} is not a decimal integer")
    if len(text) > DIGITS:
        raise BadTileRequest(f"{name} {shown(text)} is out of range ({len(text)} digits)")
    return int(text)


def psi_of(request: Request) -> float:
    """The query's psi (default 1.0); any other parameter, or psi twice, is refused."""
    unknown = sorted(set(request.query_params) - {"psi"})
    if unknown:
        raise BadTileRequest(f"unknown query parameter {shown(unknown[0])} (only psi is taken)")
    values = request.query_params.getlist("psi")
    if not values:
        return 1.0
    if len(values) > 1:
        raise BadTileRequest("psi given more than once")
    try:
        return float(values[0])
    except ValueError:
        raise BadTileRequest(f"psi {shown(values[0])} is not a number") from None


def matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match holds `etag` (the weak comparison RFC 9110 asks for this header) or is *."""
    if if_none_match is None:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


class Admission:
    """A thread pool that admits at most `workers + queue` calls at once; past that, Busy."""

    def __init__(self, workers: int, queue: int):
        if workers < 1 or queue < 0:
            raise CrepsError(f"workers {workers} and queue {queue}: need at least 1 worker and a queue of 0 or more")
        self.workers, self.queue = workers, queue
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="creps-tile")
        self.places = threading.BoundedSemaphore(workers + queue)

    async def run(self, function, *args):
        """function(*args) on the pool; a place is held from admission until the call ends
        (or, never started, is cancelled), whatever happens to the awaiting request."""
        if not self.places.acquire(blocking=False):
            raise Busy(f"busy: {self.workers + self.queue} tile renders in progress "
                       f"({self.workers} workers + {self.queue} queued); retry after {RETRY_AFTER_S} s")
        try:
            future = self.pool.submit(function, *args)
        except BaseException:
            self.places.release()
            raise
        future.add_done_callback(lambda _: self.places.release())
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Cancel renders not started, wait for the running ones."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def refusal(scope, exc: BaseException) -> Response:
    """The one-line answer to what a request raised, logged once (no traceback)."""
    headers = {}
    if isinstance(exc, HTTPException):  # the router's 404/405, a static file not found
        status, reason = exc.status_code, exc.detail
        headers = dict(exc.headers or {})
        if status == 404 and "app" in scope:
            reason = f"no such page (the routes: {', '.join(route.path for route in scope['app'].routes)})"
    elif isinstance(exc, BadTileRequest):
        status, reason = 400, str(exc)
    elif isinstance(exc, TileNotFound):
        status, reason = 404, str(exc)
    elif isinstance(exc, Busy):
        status, reason = 503, str(exc)
        headers["Retry-After"] = str(RETRY_AFTER_S)
    elif isinstance(exc, ViewerNotBuilt):
        status, reason = 503, str(exc)
    elif isinstance(exc, CrepsError):  # NonFiniteError and every refusal of the runtime: the server's fault
        status, reason = 500, str(exc)
    else:
        status, reason = 500, f"internal error: {type(exc).__name__}: {exc}"
    reason = " ".join(str(reason).split()) or "error"
    path = scope.get("raw_path") or scope.get("path", "").encode()  # raw: percent-encoded, so one line
    query = scope.get("query_string", b"")
    target = (path + (b"?" + query if query else b"")).decode("latin-1")
    log.log(logging.ERROR if status >= 500 and status != 503 else logging.WARNING,
            "%s %s -> %d %s", scope.get("method", "?"), target, status, reason)
    return PlainTextResponse(reason + "\n", status_code=status, headers=headers)


class OneLineErrors:
    """ASGI middleware: whatever an endpoint raises becomes `refusal`'s answer (outside it,
    Starlette would log a traceback)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            response = refusal(scope, exc)  # logged even when it can no longer be sent
            if not started:
                await response(scope, receive, send)


def make_app(renderer: TileRenderer, workers: int, queue: int, static_dir: Path | None = None) -> Starlette:
    """The application over `renderer` (not closed here: the caller owns it and its runtime):
    tiles render on `workers` threads with at most `workers + queue` admitted; the viewer
    from `static_dir` (default: the package's serve/static)."""
    static_dir = STATIC if static_dir is None else Path(static_dir)
    admission = Admission(workers, queue)

    def key_of(request: Request, level: str = "0", col: str = "0", row: str = "0") -> TileKey:
        key = TileKey(integer("seed", request.path_params["seed"]), psi_of(request),
                      integer("level", level), integer("col", col), integer("row", row))
        renderer.check(key)
        return key

    async def descriptor(request: Request) -> Response:
        key_of(request)  # seed and psi checked as a tile's
        return Response(renderer.descriptor(), media_type="application/xml")

    async def tile(request: Request) -> Response:
        params = request.path_params
        key = key_of(request, params["level"], params["col"], params["row"])
        etag = renderer.etag(key)
        headers = {"ETag": etag, "Cache-Control": IMMUTABLE,
                   "X-Creps-Window": window_header(renderer.canvas.window(key.level, key.col, key.row)[0])}
        if matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        rendered = await admission.run(renderer.render, key)
        return Response(rendered.png, media_type="image/png", headers=headers)

    async def info(request: Request) -> Response:
        runtime = renderer.runtime
        return JSONResponse({"model": dict(runtime.model), "canvas": renderer.canvas.info(),
                             "backend": runtime.backend_name, "precision": runtime.precision,
                             "workers": workers, "queue": queue, "renderer": renderer.stats()})

    async def viewer(request: Request) -> Response:
        page = static_dir / "index.html"
        if not (page.is_file() and (static_dir / VIEWER_LIBRARY).is_file()):
            raise ViewerNotBuilt(f"the viewer is not built ({static_dir / VIEWER_LIBRARY} missing): "
                                 "run `bash serve/build.sh` in the creps checkout")
        return FileResponse(page, media_type="text/html")

    async def refused(request: Request, exc: HTTPException) -> Response:
        return refusal(request.scope, exc)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        admission.close()

    routes = [
        Route("/seed/{seed}.dzi", descriptor),
        Route("/seed/{seed}_files/{level}/{col}_{row}.png", tile),
        Route("/info", info),
        Route("/", viewer),
        Mount("/static", StaticFiles(directory=static_dir, check_dir=False)),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: refused}, lifespan=lifespan)
    app.add_middleware(OneLineErrors)
    return app

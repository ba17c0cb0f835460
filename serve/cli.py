"""creps-serve: a bundle's generator as a deep-zoom canvas over HTTP (Starlette on uvicorn), torch-free."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import click
import uvicorn

from creps.cli import command, entry_point
from creps.errors import CrepsError
from creps.runtime.backends import BACKENDS, Backend
from creps.runtime.generate import Runtime
from creps.runtime.precision import CHOICES, HELP
from creps.serve.app import make_app
from creps.serve.options import cache_memory_option, canvas_options
from creps.serve.pyramid import Canvas
from creps.serve.tiles import TileRenderer

DEFAULT_QUEUE = 64  # a screenful of 256-pixel tiles on a large display, waiting at once


def pool_size(backend: Backend, workers: int | None) -> int:
    """Tiles rendered at once: by default what the backend runs at once (`parallel`: one per
    core on ONNX Runtime's CPU provider, whose sessions are thread-safe; on TensorRT the
    execution contexts it was opened with, one per worker; 1 on ONNX Runtime CUDA). A
    backend that runs one call at a time is not thread-safe, so more workers are refused
    rather than raced."""
    parallel = backend.parallel("pixels")
    if workers is None:
        return parallel
    if workers > 1 and parallel == 1:
        raise CrepsError(f"--workers {workers}: the {backend.name} backend runs one call at a time; "
                         "use --workers 1")
    return workers


def listening(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening (port 0: a free one), so a port in use or a
    bad host is one line before the model loads, and the printed URL has the real port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise CrepsError(f"--host {host}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CrepsError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


@command(epilog="""
\b
Examples:
  creps-serve                                    # the bundled default model on http://127.0.0.1:8000/
  creps-serve --bundle ffhq/ --port 8080 --cache-memory 2G
  creps-serve --bundle ffhq/ --host 0.0.0.0 --workers 2 --queue 32
""")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Bundle folder from creps-export (default: the bundled default model, exported once into "
                   "the user cache; that first export needs PyTorch).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free one; the printed URL names it).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: TensorRT engines if usable, else ONNX Runtime CUDA, else CPU.")
@click.option("--precision", type=click.Choice(CHOICES), default=None,
              help=f"{HELP} Default: fp32 on ONNX Runtime, the engines' own precision on TensorRT.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Tiles rendered at once (default: what the backend runs at once: one per core on ONNX Runtime "
                   "CPU, 1 on a GPU).")
@click.option("--queue", type=click.IntRange(min=0), default=DEFAULT_QUEUE, show_default=True,
              help="Tile requests that may wait for a worker; past workers + queue, 503 with Retry-After.")
@cache_memory_option
@canvas_options
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--allow-engine-host-code", is_flag=True,
              help="Run version-compatible TensorRT engines (they carry executable host code): a bundle you trust.")
def cli(bundle, host, port, backend, precision, workers, queue, cache_memory, views, detail, threads,
        allow_engine_host_code):
    """Serve a bundle's generator as a Deep Zoom canvas: every tile at every level rendered
    natively for its window, line features cached across tiles, and a viewer at /.

    Tiles: /seed/{seed}_files/{level}/{col}_{row}.png?psi=0.7, described by /seed/{seed}.dzi.
    Ctrl-C or SIGTERM stops it (renders in progress finish first).
    """
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(listening(host, port))
        runtime = stack.enter_context(Runtime(bundle, backend=backend, threads=threads, precision=precision,
                                              allow_engine_host_code=allow_engine_host_code,
                                              contexts=workers or 1))
        renderer = TileRenderer(runtime, Canvas.of(runtime.model, views, detail), cache_memory)
        workers = pool_size(runtime.backend, workers)
        app = make_app(renderer, workers, queue)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
        click.echo(f"serving {url_of(sock)} ({runtime.bundle.path}, {runtime.backend_name} {runtime.precision}, "
                   f"{workers} workers, queue {queue})")
        server.run(sockets=[sock])


main = entry_point(cli)

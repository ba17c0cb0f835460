"""The creps-serve application (serve/app.py) on the shipped tiny bundle: the DZI, tiles equal to the runtime's
image of their X-Creps-Window, HTTP caching, bad input refused in one line and one log line, bounded admission."""

from __future__ import annotations

import asyncio
import io
import math
import re
import threading
import types
import xml.etree.ElementTree as ET

import httpx2
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from creps import grid
from creps.errors import NonFiniteError
from creps.runtime import Runtime
from creps.runtime.default import tiny_bundle
from creps.serve import Canvas, TileKey, TileRenderer
from creps.serve.app import make_app

VIEWS, DETAIL, TILE, OVERLAP = 16, 4, 256, 1  # the canvas defaults the interface fixes
DZI = "{http://schemas.microsoft.com/deepzoom/2008}"
IMMUTABLE = "public, max-age=31536000, immutable"
CLIENT_LOGGERS = ("httpx", "httpcore")  # the test's HTTP client logs its requests at INFO


@pytest.fixture(scope="module")
def runtime():
    with Runtime(tiny_bundle(), backend="ort-cpu") as runtime:
        yield runtime


@pytest.fixture(scope="module")
def reference():
    """A second runtime on the same bundle: what the tiles must equal."""
    with Runtime(tiny_bundle(), backend="ort-cpu") as runtime:
        yield runtime


@pytest.fixture(scope="module")
def renderer(runtime):
    return TileRenderer(runtime, Canvas.of(runtime.model), 64 << 20)


@pytest.fixture(scope="module")
def client(renderer):
    with TestClient(make_app(renderer, workers=2, queue=4)) as client:
        yield client


@pytest.fixture(scope="module")
def geometry(runtime):
    """(step, x0, side, deepest level) from the interface's rules, not from the code under test."""
    resolution = runtime.model["img_resolution"]
    step = 2.0 ** -math.ceil(math.log2(DETAIL * (resolution - 1)))
    side = round(VIEWS / step)
    return step, 0.5 - VIEWS / 2, side, math.ceil(math.log2(side))


def expected_window(geometry, level, col, row):
    """The centres of a tile's first and last pixels and its size, by the DZI overlap rule."""
    step, origin, side, deepest = geometry
    shrink = 2 ** (deepest - level)
    length = -(-side // shrink)
    spans = [range(max(0, i * TILE - OVERLAP), min(length, (i + 1) * TILE + OVERLAP)) for i in (col, row)]
    at = [origin + step * ((i + 0.5) * shrink - 0.5) for span in spans for i in (span[0], span[-1])]
    return (at[0], at[2], at[1], at[3]), (len(spans[0]), len(spans[1]))


def test_the_descriptor_names_the_pyramid(client, geometry):
    response = client.get("/seed/3.dzi?psi=0.7")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    image = ET.fromstring(response.content)
    assert image.tag == f"{DZI}Image"
    assert (image.get("TileSize"), image.get("Overlap"), image.get("Format")) == (str(TILE), str(OVERLAP), "png")
    size = image.find(f"{DZI}Size")
    assert (size.get("Width"), size.get("Height")) == (str(geometry[2]),) * 2
    assert client.get("/seed/4.dzi").content == response.content  # the same for every seed and psi


@pytest.mark.parametrize("seed, psi, level, col, row", [
    (0, 1.0, 0, 0, 0),     # 1x1, the whole canvas
    (5, 0.7, 3, 0, 0),     # 8x8
    (1, 0.5, 11, 0, 1),    # 257x258: first column, an inner row
    (2, -0.3, 11, 3, 4),   # 258x258: inner on both axes
    (3, 2.0, 11, 7, 7),    # 257x257: the last tile
    (7, 1.0, 9, 1, 0),     # 257x257 at a middle level
])
def test_a_tile_is_the_runtime_image_of_its_window(client, reference, geometry, seed, psi, level, col, row):
    assert geometry[3] == 11  # the cases above are the tiny bundle's pyramid (32-pixel model)
    response = client.get(f"/seed/{seed}_files/{level}/{col}_{row}.png?psi={psi}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    window = grid.parse_window(response.headers["X-Creps-Window"])
    pixels = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))  # (H, W, 3)
    size = (pixels.shape[1], pixels.shape[0])
    assert (tuple(window), size) == expected_window(geometry, level, col, row)
    np.testing.assert_array_equal(pixels, reference.generate(seed, size, psi, window=window)[0])


def test_adjacent_tiles_continue_one_grid(client):
    """The overlap columns of two neighbours are the same plane coordinates, hence the same pixels."""
    left, right = (client.get(f"/seed/4_files/11/{col}_2.png") for col in (2, 3))
    x_left, x_right = (grid.parse_window(r.headers["X-Creps-Window"]) for r in (left, right))
    step = (x_left.x1 - x_left.x0) / 257
    assert x_right.x0 == x_left.x1 - step  # two shared columns: left's last two are right's first two
    a, b = (np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")) for r in (left, right))
    np.testing.assert_array_equal(a[:, -2:], b[:, :2])


def test_etag_is_strong_and_stable_and_answers_304_without_rendering(client, renderer):
    path = "/seed/9_files/10/1_2.png?psi=0.6"
    first, again = client.get(path), client.get(path)
    etag = first.headers["ETag"]
    assert re.fullmatch(r'"[^"\s]+"', etag)  # strong: quoted, no W/
    assert again.headers["ETag"] == etag and again.content == first.content
    assert first.headers["Cache-Control"] == IMMUTABLE
    others = {client.get(p).headers["ETag"] for p in ("/seed/8_files/10/1_2.png?psi=0.6",
                                                      "/seed/9_files/10/1_2.png?psi=0.5",
                                                      "/seed/9_files/10/2_1.png?psi=0.6",
                                                      "/seed/9_files/9/1_1.png?psi=0.6")}
    assert etag not in others and len(others) == 4
    rendered = renderer.stats()["tiles_rendered"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = client.get(path, headers={"If-None-Match": header})
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["ETag"] == etag and cached.headers["Cache-Control"] == IMMUTABLE
        assert cached.headers["X-Creps-Window"] == first.headers["X-Creps-Window"]
    assert renderer.stats()["tiles_rendered"] == rendered
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_info_describes_model_canvas_and_backend(client, runtime, geometry):
    info = client.get("/info").json()
    assert info["model"]["img_resolution"] == runtime.model["img_resolution"]
    assert (info["backend"], info["precision"]) == ("ort-cpu", "fp32")
    step, origin, side, deepest = geometry
    canvas = info["canvas"]
    assert (canvas["views"], canvas["step"], canvas["x0"], canvas["y0"]) == (VIEWS, step, origin, origin)
    assert (canvas["width"], canvas["height"], canvas["levels"]) == (side, side, deepest + 1)
    assert (canvas["tile_size"], canvas["overlap"]) == (TILE, OVERLAP)
    assert (info["workers"], info["queue"]) == (2, 4)


BAD = {  # path -> status; the tiny bundle's pyramid has levels 0..11, 8x8 tiles at level 11
    "/seed/abc.dzi": 400, "/seed/1.5.dzi": 400, "/seed/-1.dzi": 400, "/seed/4294967296.dzi": 400,
    "/seed/" + "9" * 40 + ".dzi": 400, "/seed/%0A1.dzi": 400, "/seed/+1.dzi": 400, "/seed/1_000.dzi": 400,
    "/seed/0.dzi?psi=nan": 400, "/seed/0.dzi?psi=inf": 400, "/seed/0.dzi?psi=-inf": 400,
    "/seed/0.dzi?psi=text": 400, "/seed/0.dzi?psi=2.5": 400, "/seed/0.dzi?psi=-3": 400, "/seed/0.dzi?psi=": 400,
    "/seed/0.dzi?psi=1&psi=1": 400, "/seed/0.dzi?zoom=2": 400,
    "/seed/x_files/0/0_0.png": 400, "/seed/-5_files/0/0_0.png": 400, "/seed/4294967296_files/0/0_0.png": 400,
    "/seed/0_files/one/0_0.png": 400, "/seed/0_files/1e1/0_0.png": 400, "/seed/0_files/0/a_0.png": 400,
    "/seed/0_files/0/0_b.png": 400, "/seed/0_files/0/0_0_0.png": 400, "/seed/0_files/0/0x1_0.png": 400,
    "/seed/0_files/" + "9" * 40 + "/0_0.png": 400, "/seed/0_files/0/0_0.png?psi=nan": 400,
    "/seed/0_files/0/0_0.png?psi=1e400": 400,
    "/seed/0_files/12/0_0.png": 404, "/seed/0_files/-1/0_0.png": 404, "/seed/0_files/99999999999/0_0.png": 404,
    "/seed/0_files/11/8_0.png": 404, "/seed/0_files/11/0_8.png": 404, "/seed/0_files/11/-1_0.png": 404,
    "/seed/0_files/11/0_-1.png": 404, "/seed/0_files/0/1_0.png": 404, "/seed/0_files/11/4294967296_0.png": 404,
    "/nope": 404, "/seed/0.txt": 404, "/seed/0_files/0/0_0.jpg": 404, "/seed/0_files/0_0.png": 404,
    "/static/no-such-file.js": 404,
}


@pytest.mark.parametrize("path", BAD)
def test_bad_input_is_one_line_and_one_log_line(client, caplog, path):
    caplog.clear()
    response = client.get(path)
    assert response.status_code == BAD[path]
    assert_one_line_refusal(response, caplog, "WARNING")


def test_other_methods_are_refused_in_one_line(client, caplog):
    caplog.clear()
    response = client.post("/info")
    assert response.status_code == 405 and response.headers["Allow"]
    assert_one_line_refusal(response, caplog, "WARNING")


def assert_one_line_refusal(response, caplog, level):
    body = response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert body.endswith("\n") and "\n" not in body.rstrip("\n") and body.strip()
    assert "Traceback" not in body
    records = [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    assert record.levelname == level and record.exc_info is None
    message = record.getMessage()
    assert "\n" not in message and f"-> {response.status_code} {body.strip()}" in message


@pytest.mark.parametrize("built", [False, True])
def test_the_viewer_or_how_to_build_it(renderer, tmp_path, caplog, built):
    (tmp_path / "index.html").write_text("<!doctype html><title>viewer</title>")
    (tmp_path / "viewer.js").write_text("// viewer")
    if built:
        (tmp_path / "vendor" / "openseadragon").mkdir(parents=True)
        (tmp_path / "vendor" / "openseadragon" / "openseadragon.min.js").write_text("// osd")
    with TestClient(make_app(renderer, 1, 0, static_dir=tmp_path)) as client:
        caplog.clear()
        page = client.get("/")
        if built:
            assert page.status_code == 200 and page.text == (tmp_path / "index.html").read_text()
            assert client.get("/static/vendor/openseadragon/openseadragon.min.js").text == "// osd"
            assert not [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
        else:
            assert page.status_code == 503 and "bash serve/build.sh" in page.text
            assert_one_line_refusal(page, caplog, "WARNING")
        assert client.get("/static/viewer.js").text == "// viewer"


class StandIn:
    """Stands in for TileRenderer as serve_interface.md describes it (check, etag, render -> a Tile's png,
    descriptor, canvas.window, runtime, stats): every render waits for `release`, or raises `failure`."""

    def __init__(self, failure: BaseException | None = None):
        self.release = threading.Event()
        self.failure = failure
        self.lock = threading.Lock()
        self.started = self.running = self.most = 0
        self.canvas = types.SimpleNamespace(window=lambda level, col, row: (grid.Window(0.0, 0.0, 1.0, 1.0), (2, 2)))

    def check(self, key: TileKey) -> None:
        pass

    def etag(self, key: TileKey) -> str:
        return f'"{key.seed}.{key.level}.{key.col}.{key.row}"'

    def descriptor(self) -> str:
        return "<Image/>"

    def render(self, key: TileKey):
        with self.lock:
            self.started += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if self.failure is not None:
                raise self.failure
            assert self.release.wait(timeout=30), "the test never released the renders"
            return types.SimpleNamespace(png=f"tile {key.seed}".encode())
        finally:
            with self.lock:
                self.running -= 1


async def until(condition, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def serve(app, scenario):
    """Run `scenario(client)` against the app in one event loop, requests as concurrent tasks."""
    async def main():
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://creps") as client:
            return await scenario(client)

    return asyncio.run(main())


def tile(seed: int) -> str:
    return f"/seed/{seed}_files/0/0_0.png"


@pytest.mark.parametrize("workers, queue", [(1, 0), (1, 2), (2, 3)])
def test_past_workers_plus_queue_is_503_with_retry_after_and_it_recovers(caplog, workers, queue):
    stand_in = StandIn()
    app = make_app(stand_in, workers, queue)

    async def scenario(client):
        held = [asyncio.create_task(client.get(tile(seed))) for seed in range(workers + queue)]
        await until(lambda: stand_in.started == workers)
        await asyncio.sleep(0.2)  # every held request past its admission, waiting for a worker or its render
        caplog.clear()
        refused = await client.get(tile(99))
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert_one_line_refusal(refused, caplog, "WARNING")
        assert stand_in.started == workers  # refused before it reached the pool
        stand_in.release.set()
        answers = await asyncio.gather(*held)
        assert [a.status_code for a in answers] == [200] * len(held)
        assert [a.content for a in answers] == [f"tile {seed}".encode() for seed in range(len(held))]
        again = await client.get(tile(100))
        assert again.status_code == 200 and again.content == b"tile 100"

    serve(app, scenario)
    assert stand_in.most == workers


def test_a_request_that_went_away_holds_its_place_until_its_render_ends(caplog):
    """The count is of work, not of waiting clients: a cancelled request whose render runs still
    counts; one cancelled while queued frees its place at once."""
    stand_in = StandIn()
    app = make_app(stand_in, workers=1, queue=1)

    async def scenario(client):
        running = asyncio.create_task(client.get(tile(1)))
        await until(lambda: stand_in.started == 1)
        queued = asyncio.create_task(client.get(tile(2)))
        await asyncio.sleep(0.2)
        queued.cancel()  # its render never started: its place is free again
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(client.get(tile(3)))
        await asyncio.sleep(0.2)
        running.cancel()  # its render goes on in the worker, holding a place
        await asyncio.sleep(0.1)
        assert (await client.get(tile(4))).status_code == 503
        stand_in.release.set()
        assert (await waiting).status_code == 200
        await until(lambda: stand_in.running == 0)
        assert (await client.get(tile(5))).status_code == 200

    serve(app, scenario)
    assert stand_in.started == 3  # tiles 1, 3 and 5: the cancelled queued one never rendered


@pytest.mark.parametrize("failure, body", [
    (NonFiniteError("seed 1: the pixels graph gave NaN or Inf in the tile x 0-1, y 0-1; no image written"),
     "seed 1: the pixels graph gave NaN or Inf in the tile x 0-1, y 0-1; no image written"),
    (RuntimeError("a bug\nover two lines"), "internal error: RuntimeError: a bug over two lines"),
])
def test_a_failed_render_is_500_with_one_line_logged_once(caplog, failure, body):
    with TestClient(make_app(StandIn(failure), 1, 0)) as client:
        caplog.clear()
        response = client.get(tile(1))
    assert response.status_code == 500 and response.text == body + "\n"
    assert_one_line_refusal(response, caplog, "ERROR")

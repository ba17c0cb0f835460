"""The viewer in a real browser: Debian's headless Chromium, driven by Playwright, against creps-serve's
application on a loopback port with the shipped tiny bundle.

What the browser shows is checked against the runtime itself: at a view where the deepest level is drawn
pixel for pixel, the screenshot's centre must be `Runtime.generate` of the window those screen pixels cover.
Without /usr/bin/chromium, Playwright or the built viewer (`bash serve/build.sh --browser`) the tests skip,
except under CI (CI set), where they fail: CI installs all three.
The screenshot is kept as tests/artifacts/serve_viewer.png.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from creps.grid import Window
from creps.runtime import Runtime, default

uvicorn = pytest.importorskip("uvicorn")
from creps.serve.app import STATIC, VIEWER_LIBRARY, make_app  # noqa: E402  (needs the web stack)
from creps.serve.pyramid import Canvas  # noqa: E402
from creps.serve.tiles import TileRenderer  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "serve_viewer.png"
SCREEN = {"width": 640, "height": 480}  # even sizes: the viewer's centre falls on a pixel boundary
TILE_URL = re.compile(r"/seed/(\d+)_files/(\d+)/(\d+)_(\d+)\.png\?psi=([^&]+)$")
TIMEOUT_MS = 60_000


def unavailable(reason: str) -> None:
    """Skip for a missing browser part, or fail under CI, which installs them."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it (bash serve/build.sh --browser, pip install -e '.[test]')")
    pytest.skip(reason)


def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright; the browser is Debian's chromium)")
    return sync_playwright


class Served:
    """creps-serve's app on uvicorn in a thread, on a free loopback port."""

    def __init__(self):
        self.runtime = Runtime(default.tiny_bundle())
        self.canvas = Canvas.of(self.runtime.model)
        app = make_app(TileRenderer(self.runtime, self.canvas, 64 << 20), workers=2, queue=256)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def close(self):
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()
        self.runtime.close()


@pytest.fixture(scope="module")
def served():
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} not found (Debian's chromium: bash serve/build.sh --browser)")
    if not (STATIC / VIEWER_LIBRARY).is_file():
        unavailable(f"the viewer is not built ({STATIC / VIEWER_LIBRARY} missing: bash serve/build.sh)")
    server = Served()
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser(served):
    with sync_playwright()() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


class Page:
    """A browser page on the viewer that records console errors and every tile response."""

    def __init__(self, browser, served: Served):
        self.served = served
        self.context = browser.new_context(viewport=SCREEN, device_scale_factor=1)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.tiles: list[dict] = []
        self.responses: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("response", self.record)

    def record(self, response):
        self.responses.append(response.url)
        match = TILE_URL.search(response.url)
        if match:
            seed, level, col, row, psi = match.groups()
            self.tiles.append({"seed": int(seed), "level": int(level), "col": int(col), "row": int(row),
                               "psi": float(psi), "status": response.status,
                               "type": response.headers.get("content-type"),
                               "window": response.headers.get("x-creps-window")})

    def open(self, query: str = "") -> None:
        self.page.goto(f"{self.served.url}/{query}")
        self.settled()

    def settled(self, seed: int | None = None) -> None:
        """Wait until the viewer shows `seed` (default: any), fully loaded and still."""
        self.page.wait_for_function(
            """seed => {
                const creps = window.creps;
                const item = creps && creps.viewer.world.getItemAt(0);
                const viewport = creps && creps.viewer.viewport;
                return !!item && item.getFullyLoaded() && (seed === null || creps.state.seed === seed)
                    && item.source.tilesUrl.endsWith(`/seed/${creps.state.seed}_files/`)
                    && viewport.getZoom(true) === viewport.getZoom(false)
                    && viewport.getCenter(true).equals(viewport.getCenter(false));
            }""", arg=seed)

    def view(self) -> dict:
        return self.page.evaluate("window.creps.currentView()")

    def url(self) -> str:
        return self.page.evaluate("window.location.href")  # page.url lags history.replaceState

    def query(self) -> dict:
        return {name: values[0] for name, values in parse_qs(urlsplit(self.url()).query).items()}

    def wait_for_url(self, view: dict) -> None:
        """Wait until the page's URL names `view` (it follows the view once it rests)."""
        deadline = time.monotonic() + 10
        while not close(url_view(self.query()), view):
            assert time.monotonic() < deadline, f"the URL {self.url()} never named the view {view}"
            self.page.wait_for_timeout(50)

    def close(self):
        self.context.close()


@pytest.fixture
def page(browser, served):
    viewer = Page(browser, served)
    yield viewer
    viewer.close()
    assert not viewer.errors, f"console errors: {viewer.errors}"


def url_view(query: dict) -> dict:
    return {name: float(query[name]) for name in ("x", "y", "zoom") if name in query}


def close(a: dict, b: dict, tolerance: float = 1e-6) -> bool:
    """Same x, y and zoom: within the URL's 9 significant digits, relative to the zoom's scale."""
    if set(a) != {"x", "y", "zoom"} or set(b) != {"x", "y", "zoom"}:
        return False
    return (abs(a["zoom"] / b["zoom"] - 1) < tolerance
            and abs(a["x"] - b["x"]) * a["zoom"] < tolerance and abs(a["y"] - b["y"]) * a["zoom"] < tolerance)


def pixel_for_pixel(canvas: Canvas) -> tuple[str, Window]:
    """A view query where the deepest level is drawn 1:1 and its pixel edges fall on screen pixel edges, and
    the window of the screen pixels [w/4, 3w/4) x [h/4, 3h/4) in the middle of the viewer."""
    # The viewer's centre is a pixel boundary (even SCREEN); put the boundary between deepest pixels n-1 and n
    # there, so screen pixel s shows deepest pixel n - w/2 + s.
    n = canvas.width // 2 + 37, canvas.height // 2 - 21  # off the canvas's own middle, odd offsets
    centre = [origin + canvas.step * (edge - 0.5) for origin, edge in zip((canvas.x0, canvas.y0), n)]
    zoom = canvas.width / SCREEN["width"]  # one deepest pixel per screen pixel
    first = [edge - size // 2 + size // 4 for edge, size in zip(n, (SCREEN["width"], SCREEN["height"]))]
    last = [f + size // 2 - 1 for f, size in zip(first, (SCREEN["width"], SCREEN["height"]))]
    window = Window(canvas.x0 + canvas.step * first[0], canvas.y0 + canvas.step * first[1],
                    canvas.x0 + canvas.step * last[0], canvas.y0 + canvas.step * last[1])
    return f"?seed=3&psi=0.7&x={centre[0]!r}&y={centre[1]!r}&zoom={zoom!r}", window


def test_page_shows_the_runtimes_pixels(page, served):
    query, window = pixel_for_pixel(served.canvas)
    page.open(query)

    assert page.tiles, "no tile was requested"
    assert all(tile["status"] == 200 and tile["type"] == "image/png" for tile in page.tiles), page.tiles
    assert {(tile["seed"], tile["psi"]) for tile in page.tiles} == {(3, 0.7)}  # tile URLs carry seed and psi
    assert all(tile["window"] for tile in page.tiles)
    assert not any("cdn" in url or not url.startswith(served.url) for url in page.responses), page.responses
    model = page.page.locator("#about").inner_text()
    assert served.runtime.precision in model and served.runtime.backend_name in model, model

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    page.page.locator("#viewer").screenshot(path=str(ARTIFACT))
    print(f"viewer screenshot: {ARTIFACT}")
    shot = np.asarray(Image.open(ARTIFACT).convert("RGB"))
    assert shot.shape == (SCREEN["height"], SCREEN["width"], 3)
    middle = shot[SCREEN["height"] // 4: 3 * SCREEN["height"] // 4, SCREEN["width"] // 4: 3 * SCREEN["width"] // 4]

    with Runtime(default.tiny_bundle()) as reference:
        expected = reference.generate(seeds=[3], size=(middle.shape[1], middle.shape[0]), psi=0.7, window=window)[0]
    assert expected.std() > 1  # a view with content, so equality below means something
    difference = np.abs(middle.astype(int) - expected.astype(int))
    assert difference.max() == 0, f"screen differs from the runtime by up to {difference.max()} " \
                                  f"(mean {difference.mean():.3f})"


def test_zooming_in_requests_deeper_levels(page, served):
    page.open("?seed=1&psi=1&x=0.5&y=0.5&zoom=1")  # the whole canvas
    before = {tile["level"] for tile in page.tiles}
    zoom = page.view()["zoom"]
    page.tiles.clear()
    page.page.mouse.move(SCREEN["width"] / 2, SCREEN["height"] / 2)
    for _ in range(10):  # the wheel, as a user zooms
        page.page.mouse.wheel(0, -200)
        page.page.wait_for_timeout(50)
    page.settled()
    after = {tile["level"] for tile in page.tiles}
    assert page.view()["zoom"] > 4 * zoom
    assert after and max(after) > max(before), (before, after)
    assert max(after) <= served.canvas.levels - 1
    assert all(tile["status"] == 200 for tile in page.tiles)


def test_seed_and_psi_controls_keep_the_view(page, served):
    page.open("?seed=2&psi=0.5&x=0.3&y=0.6&zoom=5")  # zoom within the tiny canvas's 2 screen pixels per pixel
    view = page.view()
    assert close(view, {"x": 0.3, "y": 0.6, "zoom": 5})
    page.tiles.clear()
    with page.page.expect_response(lambda response: "/seed/9.dzi?psi=0.5" in response.url):
        page.page.fill("#seed", "9")
        page.page.press("#seed", "Enter")
    page.settled(seed=9)
    assert page.tiles and {(tile["seed"], tile["psi"]) for tile in page.tiles} == {(9, 0.5)}
    assert close(page.view(), view)
    page.tiles.clear()
    with page.page.expect_response(lambda response: "/seed/9.dzi?psi=-0.25" in response.url):
        page.page.fill("#psi", "-0.25")
        page.page.press("#psi", "Enter")
    page.settled(seed=9)
    assert page.tiles and {(tile["seed"], tile["psi"]) for tile in page.tiles} == {(9, -0.25)}
    assert page.page.input_value("#psi-range") == "-0.25"
    page.wait_for_url(view)
    assert page.query()["seed"] == "9" and page.query()["psi"] == "-0.25"

    page.page.evaluate("""() => {  // two seeds before the first opened: the last one wins, the view stays
        const seed = document.getElementById("seed");
        for (const value of ["10", "11"]) {
            seed.value = value;
            seed.dispatchEvent(new Event("change"));
        }
    }""")
    page.settled(seed=11)
    assert close(page.view(), view)
    page.wait_for_url(view)
    assert page.query()["seed"] == "11"


def test_url_carries_the_view(page, served):
    page.open("?seed=4&psi=0.8")
    page.page.evaluate("""() => {
        const viewport = window.creps.viewer.viewport;
        viewport.zoomTo(4.5, null, true);
        viewport.panTo(window.creps.planeToViewport(0.71, 0.2), true);
    }""")
    page.settled()
    view = page.view()
    assert close(view, {"x": 0.71, "y": 0.2, "zoom": 4.5})
    page.wait_for_url(view)
    shared = page.url()

    page.page.reload()
    page.settled()
    assert close(page.view(), view)
    other = Page(page.page.context.browser, served)  # a second reader of the shared URL
    try:
        other.page.goto(shared)
        other.settled()
        assert close(other.view(), view)
        assert other.page.input_value("#seed") == "4" and other.page.input_value("#psi") == "0.8"
        assert {(tile["seed"], tile["psi"]) for tile in other.tiles} == {(4, 0.8)}
    finally:
        other.close()
    assert not other.errors, other.errors


def test_a_malformed_url_falls_back_to_the_trained_view(page, served):
    page.open("?seed=-1&psi=nan&x=abc&zoom=0")
    assert page.page.input_value("#seed") == "0" and page.page.input_value("#psi") == "1"
    view = page.view()
    # the trained view [0, 1] fits the viewer (one trained view across its shorter side), centred on 0.5, as far
    # as the zoom may go (2 screen pixels per deepest pixel: the tiny model's trained view is small)
    fit = served.canvas.views * min(SCREEN.values()) / SCREEN["width"]
    deepest = 2 * served.canvas.width / SCREEN["width"]
    assert close(view, {"x": 0.5, "y": 0.5, "zoom": min(fit, deepest)}, tolerance=1e-3)

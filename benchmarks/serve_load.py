"""creps-serve under load on loopback: concurrent viewers, then a burst past its admission bound.

For each count of --clients (default 1, 4, 16), a fresh `creps-serve` (a subprocess: real
uvicorn, on a free port) and that many clients at once, each a thread with one keep-alive
HTTP/1.1 connection running the scripted pan-and-zoom session (benchmarks/serve_session.py)
on its own seed: the DZI, then the session's tiles one request at a time, until the session
ends, --tiles-per-client or --seconds (the phase's bound; a request in flight finishes).
Per phase: tiles, p50 and p99 tile latency (request sent to body read), throughput (tiles
per second of the phase), the server's peak RSS (VmHWM of its process), its line-cache
figures from /info, errors (any answer but 200, any failed request) and wrong tiles.

Then the burst: a fresh server with --burst-queue, and 4 x (workers + queue) requests for
distinct tiles sent at once, each on its own connection. Past workers + queue the server
must answer 503 with Retry-After rather than queue them; every refused tile is then asked
for again after its Retry-After (a few tries) and must come back whole: the server recovers.
Its RSS is read before and after.

Every tile that came back (load and burst) is checked after the timed part, in this process:
its PNG must equal `Runtime.generate(seed, size, psi, window)` for the window its
X-Creps-Window header names, and that window and size must be the canvas's for the tile.
"""

from __future__ import annotations

import http.client
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import click
import numpy as np
from PIL import Image

from common import benchmark
from serve_session import session

from creps import grid
from creps.cli import entry_point
from creps.runtime import Runtime
from creps.serve import Canvas, TileKey

STARTUP_S = 300  # the first run of the default model exports it
RETRIES = 5


@dataclass
class Answer:
    """One tile request: what was asked, what came back, how long it took."""

    key: TileKey
    status: int | None = None
    seconds: float = 0.0
    png: bytes = b""
    window: str | None = None
    retry_after: str | None = None
    error: str | None = None


class Server:
    """`creps-serve` in a subprocess on a free loopback port, stopped (SIGTERM) on exit."""

    def __init__(self, options: list[str]):
        command = [sys.executable, "-c", "from creps.commands import serve; serve()", "--port", "0", *options]
        self.log = tempfile.TemporaryFile("w+")  # its stderr: one line per refused request
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()  # "serving http://127.0.0.1:PORT/ (...)"
        if not line.startswith("serving "):
            self.process.kill()
            raise click.ClickException(f"creps-serve did not start (exit {self.process.wait()})")
        parts = urlsplit(line.split()[1])
        self.host, self.port = parts.hostname, parts.port
        self.info = json.loads(self.get("/info"))

    def get(self, path: str) -> bytes:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=STARTUP_S)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise click.ClickException(f"GET {path}: {response.status} {body[:200]!r}")
            return body
        finally:
            connection.close()

    def memory_mib(self) -> dict:
        """The server process's resident memory now and at its peak (/proc/PID/status), MiB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        return {name: round(int(fields[key].split()[0]) / 1024, 1) for name, key in (("rss", "VmRSS"),
                                                                                     ("peak_rss", "VmHWM"))}

    def __enter__(self) -> Server:
        return self

    def log_lines(self) -> list[str]:
        self.log.seek(0)
        return self.log.read().splitlines()

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def fetch(connection: http.client.HTTPConnection, key: TileKey) -> Answer:
    answer = Answer(key)
    start = time.perf_counter()
    try:
        connection.request("GET", f"/seed/{key.seed}_files/{key.level}/{key.col}_{key.row}.png?psi={key.psi!r}")
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()  # the next request reconnects
        answer.error = f"{type(exc).__name__}: {exc}"
        return answer
    answer.seconds = time.perf_counter() - start
    answer.status, answer.window = response.status, response.getheader("X-Creps-Window")
    answer.retry_after = response.getheader("Retry-After")
    answer.png = body if response.status == 200 else b""
    return answer


@dataclass
class Client:
    """One viewer: its session's tiles in order on one connection, until done or the deadline."""

    server: Server
    keys: list[TileKey]
    deadline: float
    answers: list[Answer] = field(default_factory=list)

    def run(self) -> None:
        connection = http.client.HTTPConnection(self.server.host, self.server.port, timeout=STARTUP_S)
        try:
            key = self.keys[0]
            connection.request("GET", f"/seed/{key.seed}.dzi?psi={key.psi!r}")
            connection.getresponse().read()
            for key in self.keys:
                if time.perf_counter() > self.deadline:
                    break
                self.answers.append(fetch(connection, key))
        finally:
            connection.close()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, linear between order statistics."""
    return float(np.percentile(values, q)) if values else float("nan")


def load_phase(options: list[str], clients: int, psi: float, tiles_per_client: int | None,
               seconds: float) -> tuple[dict, list[Answer]]:
    with Server(options) as server:
        canvas = canvas_of(server.info)
        start = time.perf_counter()
        viewers = [Client(server, [k for step in session(canvas, seed, psi) for k in step][:tiles_per_client],
                          start + seconds) for seed in range(clients)]
        threads = [threading.Thread(target=viewer.run) for viewer in viewers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        answers = [a for viewer in viewers for a in viewer.answers]
        memory = server.memory_mib()
        cache = json.loads(server.get("/info"))["renderer"]
        logged = len(server.log_lines())
    latencies = [a.seconds for a in answers if a.status == 200]
    errors = [a for a in answers if a.status != 200]
    row = {"clients": clients, "requests": len(answers), "seconds": round(wall, 2),
           "p50_ms": round(1000 * percentile(latencies, 50), 1), "p99_ms": round(1000 * percentile(latencies, 99), 1),
           "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
           "throughput_tiles_per_s": round(len(latencies) / wall, 3), "peak_rss_mib": memory["peak_rss"],
           "errors": len(errors), "error_kinds": sorted({a.error or str(a.status) for a in errors}),
           "server_log_lines": logged, "line_cache": cache}
    click.echo(f"{clients:>3} clients: {row['requests']} tiles in {row['seconds']} s, p50 {row['p50_ms']} ms, "
               f"p99 {row['p99_ms']} ms, {row['throughput_tiles_per_s']} tiles/s, peak RSS {row['peak_rss_mib']} MiB, "
               f"{row['errors']} errors")
    return row, answers


def burst_phase(options: list[str], psi: float) -> tuple[dict, list[Answer], dict]:
    with Server(options) as server:
        workers, queue = server.info["workers"], server.info["queue"]
        canvas = canvas_of(server.info)
        level = canvas.max_level
        cols, rows = canvas.tile_counts(level)
        count = 4 * (workers + queue)
        keys = [TileKey(1000, psi, level, i % cols, (i // cols) % rows) for i in range(count)]
        before = server.memory_mib()
        barrier = threading.Barrier(count)
        first: list[Answer | None] = [None] * count

        def one(i):
            connection = http.client.HTTPConnection(server.host, server.port, timeout=STARTUP_S)
            connection.connect()
            barrier.wait()
            first[i] = fetch(connection, keys[i])
            connection.close()

        start = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        burst_s = time.perf_counter() - start
        after = server.memory_mib()
        refused = [a for a in first if a.status == 503]
        final = [a for a in first if a.status == 200]
        connection = http.client.HTTPConnection(server.host, server.port, timeout=STARTUP_S)
        logged = len(server.log_lines())  # before the retries: the burst's own refusals
        unrecovered = 0
        for answer in [a for a in first if a.status != 200]:
            for _ in range(RETRIES):
                time.sleep(float(answer.retry_after or 1))
                answer = fetch(connection, answer.key)
                if answer.status == 200:
                    final.append(answer)
                    break
            else:
                unrecovered += 1
        connection.close()
        memory = server.memory_mib()
        info = server.info
    row = {"workers": workers, "queue": queue, "sent_at_once": count, "seconds": round(burst_s, 2),
           "ok": sum(a.status == 200 for a in first), "refused_503": len(refused),
           "refused_with_retry_after": sum(a.retry_after is not None for a in refused),
           "other_errors": sum(a.status not in (200, 503) for a in first), "recovered": len(final),
           "unrecovered": unrecovered, "server_log_lines": logged, "rss_before_mib": before["rss"], "rss_after_burst_mib": after["rss"],
           "peak_rss_mib": memory["peak_rss"]}
    click.echo(f"burst: {count} at once past {workers} workers + {queue} queued: {row['ok']} ok, "
               f"{row['refused_503']} 503 ({row['refused_with_retry_after']} with Retry-After), "
               f"{row['other_errors']} other; {row['recovered']}/{count} tiles after retries; "
               f"RSS {before['rss']} -> {after['rss']} MiB")
    return row, final, info


def canvas_of(info: dict) -> Canvas:
    return Canvas.of(info["model"], info["canvas"]["views"], info["canvas"]["detail"])


def wrong_tiles(bundle, answers: list[Answer], canvas: Canvas) -> list[str]:
    """The tiles whose PNG is not the runtime's image of their X-Creps-Window (or whose window or
    size is not the canvas's for the tile), rendered here in this process."""
    wrong = []
    with Runtime(bundle, backend="ort-cpu") as runtime:
        for answer in answers:
            key = answer.key
            window = grid.parse_window(answer.window)
            pixels = np.asarray(Image.open(io.BytesIO(answer.png)).convert("RGB"))  # (h, w, 3)
            size = (pixels.shape[1], pixels.shape[0])
            expected = runtime.generate(key.seed, size, key.psi, window=window)[0]
            if (window, size) != canvas.window(key.level, key.col, key.row) or not np.array_equal(pixels, expected):
                wrong.append(f"seed {key.seed} level {key.level} tile {key.col}_{key.row}")
    return wrong


@benchmark("serve_load", __doc__, takes="about 1 min on the tiny bundle and 4 min on the default model on 2 cores")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Bundle to serve [default: the bundled default model].")
@click.option("--clients", default="1,4,16", show_default=True, help="Client counts, one load phase each.")
@click.option("--psi", type=float, default=0.7, show_default=True)
@click.option("--seconds", type=click.FloatRange(min=1), default=20, show_default=True,
              help="Bound of each load phase: no request starts after it.")
@click.option("--tiles-per-client", type=click.IntRange(min=1), default=None,
              help="Bound of each client's session [default: the whole session].")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="creps-serve --workers [its default].")
@click.option("--queue", type=click.IntRange(min=0), default=None, help="creps-serve --queue [its default].")
@click.option("--burst-queue", type=click.IntRange(min=0), default=4, show_default=True,
              help="creps-serve --queue of the burst's server.")
def main(bundle, clients, psi, seconds, tiles_per_client, workers, queue, burst_queue) -> dict:
    if bundle is None:
        from creps.runtime.default import default_bundle

        bundle = default_bundle()
    counts = [int(c) for c in clients.split(",")]
    common = ["--bundle", str(bundle), "--backend", "ort-cpu"] + (["--workers", str(workers)] if workers else [])
    rows, answers = [], []
    for count in counts:
        row, got = load_phase(common + (["--queue", str(queue)] if queue is not None else []), count, psi,
                              tiles_per_client, seconds)
        rows.append(row)
        answers.append(got)
    burst, recovered, info = burst_phase(common + ["--queue", str(burst_queue)], psi)
    canvas = canvas_of(info)
    click.echo(f"checking {sum(map(len, answers)) + len(recovered)} tiles against the runtime ...")
    for row, got in zip(rows, answers):
        row["wrong_tiles"] = len(wrong_tiles(bundle, [a for a in got if a.status == 200], canvas))
    burst["wrong_tiles"] = len(wrong_tiles(bundle, recovered, canvas))
    click.echo("clients  requests  p50 ms  p99 ms  tiles/s  peak RSS MiB  errors  wrong")
    for row in rows:
        click.echo(f"{row['clients']:>7}  {row['requests']:>8}  {row['p50_ms']:>6}  {row['p99_ms']:>6}  "
                   f"{row['throughput_tiles_per_s']:>7}  {row['peak_rss_mib']:>12}  {row['errors']:>6}  "
                   f"{row['wrong_tiles']:>5}")
    click.echo(f"burst: {burst['refused_503']} of {burst['sent_at_once']} refused 503, {burst['unrecovered']} "
               f"unrecovered, {burst['wrong_tiles']} wrong")
    return {"bundle": str(bundle), "model": info["model"], "canvas": info["canvas"], "backend": info["backend"],
            "precision": info["precision"], "server_workers": info["workers"],
            "psi": psi, "seconds_per_phase": seconds, "tiles_per_client": tiles_per_client,
            "session_tiles": sum(map(len, session(canvas, 0, psi))), "load": rows, "burst": burst}


if __name__ == "__main__":
    entry_point(main)()

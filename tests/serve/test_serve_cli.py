"""creps-serve (serve/cli.py): bad options are one line and a non-zero exit; the server prints its URL, serves,
and stops cleanly on SIGINT or SIGTERM; the pool is sized to what the backend runs at once."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from creps.errors import CrepsError
from creps.runtime.backends import Backend
from creps.runtime.default import tiny_bundle
from creps.serve.cli import cli, pool_size
from in_process import in_process
from without_packages import TORCH_SIDE, run_without

BAD_OPTIONS = {
    "port past 65535": ["--port", "70000"],
    "negative port": ["--port", "-1"],
    "no workers": ["--workers", "0"],
    "negative queue": ["--queue", "-1"],
    "cache memory not a size": ["--cache-memory", "lots"],
    "no canvas views": ["--canvas-views", "0"],
    "detail below the trained density": ["--detail", "0.5"],
    "unknown backend": ["--backend", "gpu"],
    "unknown precision": ["--precision", "fp8"],
    "a precision the bundle lacks": ["--precision", "int8"],
    "no such bundle": ["--bundle", "/no/such/bundle"],
    "unknown option": ["--zoom", "2"],
    "a host that does not resolve": ["--host", "no-such-host.invalid"],
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_a_bad_option_is_one_line_and_a_non_zero_exit(monkeypatch, capsys, case):
    args = ["--bundle", tiny_bundle(), "--port", "0", *BAD_OPTIONS[case]]
    code, out, err = in_process(monkeypatch, capsys, cli, "creps-serve", *args)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_port_in_use_is_one_line(monkeypatch, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = in_process(monkeypatch, capsys, cli, "creps-serve", "--bundle", tiny_bundle(),
                                    "--port", port)
    assert code == 1 and err.startswith(f"error: cannot listen on 127.0.0.1 port {port}") and len(err.splitlines()) == 1


def test_it_needs_nothing_of_the_torch_side(tmp_path):
    """A runtime-only install (`.[serve]`): creps-serve imports, parses and refuses without ever looking for torch."""
    done, tried = run_without(TORCH_SIDE, "creps.commands:serve", "--bundle", tiny_bundle(), "--port", "70000",
                              tmp_path=tmp_path)
    assert done.returncode == 1 and "--port" in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert tried == []


class OneAtATime(Backend):
    """A backend whose run is not thread-safe (parallel 1), as TensorRT's one context per engine."""

    name = "one-at-a-time"

    def parallel(self, stage: str) -> int:
        return 1


class Concurrent(Backend):
    name = "concurrent"

    def parallel(self, stage: str) -> int:
        return 3


def test_the_pool_is_what_the_backend_runs_at_once():
    assert pool_size(OneAtATime(), None) == 1 and pool_size(OneAtATime(), 1) == 1
    with pytest.raises(CrepsError, match="--workers 2: the one-at-a-time backend runs one call at a time"):
        pool_size(OneAtATime(), 2)
    assert pool_size(Concurrent(), None) == 3 and pool_size(Concurrent(), 8) == 8  # thread-safe: more may queue


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_it_serves_at_the_printed_url_and_stops_on_a_signal(signum, code):
    server = subprocess.Popen([sys.executable, "-c", "from creps.commands import serve; serve()", "--bundle",
                               str(tiny_bundle()), "--port", "0", "--workers", "1", "--queue", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), (line, server.stderr.read() if server.poll() else "")
        url = line.split()[1]
        with urllib.request.urlopen(f"{url}info", timeout=30) as response:
            info = json.load(response)
        assert (info["workers"], info["queue"], info["backend"]) == (1, 3, "ort-cpu")
        with urllib.request.urlopen(f"{url}seed/2_files/11/1_1.png?psi=0.5", timeout=30) as response:
            assert response.status == 200 and response.headers["X-Creps-Window"]
        server.send_signal(signum)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == code and out == "" and err == "interrupted\n"

"""Real SIGINT and SIGTERM at random moments, and what a command leaves behind.

The loop behind tests/test_signals.py and benchmarks/signals.py. A case is a command line
run in a fresh folder; each run gets one signal (SIGINT to its process group, as a
terminal's Ctrl-C; SIGTERM to the process, as `kill`) after a seeded random delay counted
from the moment its handler is in place (/proc/PID/status shows SIGTERM caught), then the
folder is inspected: no `*.partial`, no empty folder, every PNG decodes to the expected
size, every JSON parses, every bundle passes read_bundle (hashes included).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from creps.runtime.bundle import MANIFEST, read_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
from train_helpers import write_images  # noqa: E402  (tests/train/train_helpers.py)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOG_RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")  # creps.cli's logging format
PROGRESS = re.compile(r"\d+%\|")  # a tqdm bar
TIMEOUT_S = 300


@dataclasses.dataclass
class Case:
    """A command line (`argv(folder)`, run with `python -c code`) and what it writes."""

    name: str
    code: str  # python -c: the console script, possibly with the default model patched
    argv: callable  # folder -> list of arguments
    png_size: tuple[int, int] | None = None  # (width, height) of every PNG it writes
    env: callable = lambda folder: {}
    cache: callable = lambda folder: None  # a cache folder outside `folder`: inspected too, empty folders allowed


@dataclasses.dataclass
class Outcome:
    case: str
    signum: int | None
    delay: float
    code: int
    screen: list[str]
    problems: list[str]
    seconds: float  # from the handler in place to the end

    @property
    def interrupted(self) -> bool:
        return self.signum is not None and self.code == 128 + self.signum


def catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # already gone
        return True
    mask = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
    return bool(mask >> (signal.SIGTERM - 1) & 1)


def screen_lines(stderr: str) -> list[str]:
    """What stays on a terminal: each line's last redraw (tqdm redraws with \\r), without
    blank lines, progress bars and log records."""
    lines = (line.rsplit("\r", 1)[-1].strip() for line in stderr.split("\n"))
    return [line for line in lines if line and not PROGRESS.search(line) and not LOG_RECORD.match(line)]


def inspect(folder: Path, png_size: tuple[int, int] | None, empty_ok: bool = False) -> list[str]:
    """Everything wrong with what a run left in `folder` (`empty_ok`: a cache's empty folders are no output)."""
    problems = []
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder)
        if path.name.endswith(".partial"):
            problems.append(f"temporary left: {name}")
        elif path.is_dir() and not empty_ok and not any(path.iterdir()):
            problems.append(f"empty folder left: {name}")
        elif path.suffix == ".png":
            try:
                with Image.open(path) as image:
                    image.load()
                    if png_size is not None and image.size != png_size:
                        problems.append(f"{name}: {image.size}, not {png_size}")
            except Exception as exc:  # any failure to decode is the finding
                problems.append(f"{name}: does not decode ({exc})")
        elif path.suffix in (".json", ".jsonl") and path.name != MANIFEST:
            try:
                text = path.read_text()
                [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)
            except ValueError as exc:
                problems.append(f"{name}: not JSON ({exc})")
        elif path.is_dir() and any(path.glob("*.onnx")):
            try:
                read_bundle(path)
            except Exception as exc:
                problems.append(f"{name}: not a valid bundle ({exc})")
    return problems


def run_once(case: Case, folder: Path, signum: int | None = None, delay: float = 0.0) -> Outcome:
    """Run `case` in `folder`; with `signum`, send it `delay` seconds after the handler is in place."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **case.env(folder)}
    if case.cache(folder) is not None:
        env["XDG_CACHE_HOME"] = str(case.cache(folder))
    with tempfile.TemporaryFile("w+") as log, subprocess.Popen(  # a file, not a pipe: a full pipe would block
            [sys.executable, "-c", case.code, *map(str, case.argv(folder))], cwd=folder, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True) as proc:
        problems = []
        while proc.poll() is None and not catches_sigterm(proc.pid):
            time.sleep(0.005)
        ready = time.perf_counter()
        if signum is not None:
            while proc.poll() is None and time.perf_counter() - ready < delay:
                time.sleep(0.005)
            if proc.poll() is None:
                (os.killpg if signum == signal.SIGINT else os.kill)(proc.pid, signum)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            problems.append(f"hung: still running after {TIMEOUT_S} s")
        log.seek(0)
        stderr = log.read()
    seconds = time.perf_counter() - ready
    screen = screen_lines(stderr)
    outcome = Outcome(case.name, signum, delay, proc.returncode, screen, problems, seconds)
    if outcome.interrupted:
        if screen != ["interrupted"]:
            problems.append(f"stderr should be one line 'interrupted', is {screen}")
    elif proc.returncode != 0:
        problems.append(f"exit code {proc.returncode}: {stderr[-2000:]}")
    elif any("interrupted" in line or "error" in line or "Traceback" in line for line in screen):
        problems.append(f"finished, but said {screen}")
    problems += inspect(folder, case.png_size)
    if case.cache(folder) is not None:
        problems += inspect(case.cache(folder), case.png_size, empty_ok=True)
    return outcome


def signal_loop(case: Case, folder: Path, runs: int, seed: int = 0, longest: float | None = None) -> list[Outcome]:
    """One unsignalled run (it must succeed; its length bounds the delays unless `longest`),
    then `runs` runs, each with a random signal after a random delay, in fresh folders."""
    rng = random.Random(seed)
    baseline = run_once(case, folder / "baseline")
    outcomes = [baseline]
    longest = baseline.seconds if longest is None else longest
    for i in range(runs):
        outcomes.append(run_once(case, folder / f"run{i:03d}", rng.choice(SIGNALS), rng.uniform(0, longest)))
    return outcomes


def make_models(folder: Path) -> dict[str, Path]:
    """A tiny checkpoint, its bundle and a folder of training images (needs PyTorch)."""
    from creps.checkpoint import save_checkpoint
    from creps.export import export_bundle
    from tiny_models import TINY, random_generator

    G = random_generator(TINY)
    checkpoint = folder / "tiny.safetensors"
    save_checkpoint(checkpoint, G, TINY)
    images = folder / "images"
    write_images(images, 12)
    return {"checkpoint": checkpoint, "bundle": export_bundle(G, folder / "bundle", source=checkpoint, verify=False),
            "images": images}


def script(module: str, before: str = "") -> str:
    return f"{before}from {module} import main; main()"


def cases(models: dict[str, Path]) -> dict[str, Case]:
    """Every command that writes, on the tiny models, each sized to run for a second or a few."""
    checkpoint, bundle, images = models["checkpoint"], models["bundle"], models["images"]
    default_is_tiny = (f"import pathlib, creps.runtime.default as d; "
                       f"d.default_checkpoint = lambda: pathlib.Path({str(checkpoint)!r}); ")
    copy_bundle = f"import shutil; shutil.copytree({str(bundle)!r}, 'bundle'); "
    return {case.name: case for case in [
        Case("creps-run folder", script("creps.runtime.cli"),
             lambda f: ["--bundle", bundle, "--size", "512x512", "--seeds", "0-1", "--out", f"{f}/new/faces/"],
             png_size=(512, 512)),
        Case("creps-run file", script("creps.runtime.cli"),
             lambda f: ["--bundle", bundle, "--size", "768x768", "--out", f / "new" / "big.png"], png_size=(768, 768)),
        Case("creps-run first run", script("creps.runtime.cli", default_is_tiny),
             lambda f: ["--size", "64x64", "--out", f / "x.png"], png_size=(64, 64),
             cache=lambda f: f.with_name(f.name + "-cache")),
        Case("creps-export", script("creps.export.cli"),
             lambda f: ["--network", checkpoint, "--out", f / "new" / "bundle", "--onnx", "--no-verify"]),
        Case("creps-generate", script("creps.generate"),
             lambda f: ["--network", checkpoint, "--seeds", "0-3", "--size", "256x256", "--outdir", f / "new" / "out"],
             png_size=(256, 256)),
        Case("creps-calib", script("creps.calib.cli", copy_bundle),
             lambda f: ["--bundle", "bundle", "--seeds", "0", "--sizes", "32x32", "--report", f / "new" / "calib.json"]),
        Case("creps-train", script("creps.train.cli"),
             lambda f: ["--data", images, "--outdir", f / "new" / "run", "--resolution", "16", "--kimg", "0.016",
                        "--batch", "4", "--gamma", "1", "--cbase", "256", "--cmax", "16", "--map-depth", "2",
                        "--z-dim", "16", "--snap-kimg", "0.008", "--tick-kimg", "0.004"],
             cache=lambda f: f.with_name(f.name + "-cache")),
    ]}

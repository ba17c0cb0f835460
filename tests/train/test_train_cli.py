"""creps-train as users run it: one-line errors, a SIGKILL then --resume auto, torchrun with 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from creps.cli import Interrupted
from creps.generate import DEFAULT_NETWORK
from creps.train import loop
from creps.train.cli import cli
from creps.train.snapshot import newest_snapshot, snapshot_nimg
from in_process import in_process

TINY = ["--resolution", "16", "--batch", "4", "--gamma", "1", "--cbase", "256", "--cmax", "16", "--map-depth", "2",
        "--z-dim", "16", "--tick-kimg", "0.004", "--seed", "1"]


def run_cli(monkeypatch, capsys, args):
    code, _, err = in_process(monkeypatch, capsys, cli, "creps-train", *args)
    return code, err


def base_args(image_folder, tmp_path, outdir="run"):
    return ["--data", str(image_folder), "--outdir", str(tmp_path / outdir), "--cache-dir", str(tmp_path / "cache"),
            *TINY]


def assert_one_line(code, err, message):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def no_folder_made(tmp_path):
    """Nothing but the cache (and what the test itself made) under tmp_path: no --outdir, no parents of it."""
    return not (tmp_path / "runs").exists()


NESTED = "runs/a/run"  # --outdir whose parents do not exist either


@pytest.mark.parametrize("data,extra,message", [
    ("missing", [], "no such data folder"),
    ("empty", [], "no images found"),
    ("bad", [], "none of the 1 image files could be read"),
    ("images", ["--batch-gpu", "3"], "does not divide"),
    ("images", ["--resolution", "24"], "power of two"),
    ("images", ["--device", "bogus"], "device 'bogus' is not cpu or cuda[:N]"),
    ("images", ["--device", "cuda:1"], "sees no CUDA device"),
    ("images", ["--resume", "missing.safetensors"], "no such snapshot"),
    ("images", ["--inception", "missing.pt"], "missing.pt"),
])
def test_errors_are_one_line_and_leave_no_outdir(monkeypatch, capsys, image_folder, tmp_path, data, extra, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    folders = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "bad": tmp_path / "bad",
               "images": image_folder}
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    code, err = run_cli(monkeypatch, capsys, base_args(folders[data], tmp_path, NESTED) + ["--kimg", "0.004", *extra])
    assert_one_line(code, err, message)
    assert no_folder_made(tmp_path)


def test_an_existing_outdir_stays(monkeypatch, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    code, err = run_cli(monkeypatch, capsys, base_args(tmp_path / "empty", tmp_path, "mine") + ["--kimg", "0.004"])
    assert_one_line(code, err, "no images found")
    assert (tmp_path / "mine").is_dir()


def test_interrupted_before_writing_leaves_no_outdir(monkeypatch, capsys, image_folder, tmp_path):
    def interrupted(*args):
        raise Interrupted(signal.SIGTERM)  # what run_command's handler raises on SIGTERM

    monkeypatch.setattr(loop, "load_images", interrupted)  # while the images are read, after --outdir was made
    code, err = run_cli(monkeypatch, capsys, base_args(image_folder, tmp_path, NESTED) + ["--kimg", "0.004"])
    assert code == 128 + signal.SIGTERM and "interrupted" in err and "Traceback" not in err
    assert no_folder_made(tmp_path)


def test_help_states_the_default_models_recipe():
    record = json.loads(DEFAULT_NETWORK.with_suffix(".json").read_text())  # the training record
    result = CliRunner().invoke(cli, ["--help"], terminal_width=100)
    assert result.exit_code == 0
    help_text = " ".join(result.output.replace("\\\n", " ").split())
    assert " ".join(record["command"].split()) in help_text
    assert " ".join(record["dataset_command"].split()) in help_text


def test_batch_not_divisible_by_processes(monkeypatch, capsys, image_folder, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun would set it; fails before joining a group
    code, err = run_cli(monkeypatch, capsys, base_args(image_folder, tmp_path) + ["--batch", "5"])
    assert_one_line(code, err, "--batch 5 is not divisible by the 2 processes")


def test_outdir_not_writable(monkeypatch, capsys, image_folder, tmp_path):
    (tmp_path / "file").write_text("a file where the outdir's parent should be")
    code, err = run_cli(monkeypatch, capsys, base_args(image_folder, tmp_path, "file/run") + ["--kimg", "0.004"])
    assert_one_line(code, err, "not writable")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))


def test_resume_from_incompatible_snapshot(monkeypatch, capsys, image_folder, tmp_path):
    args = base_args(image_folder, tmp_path) + ["--kimg", "0.004"]
    code, _ = run_cli(monkeypatch, capsys, args)
    assert code == 0
    code, err = run_cli(monkeypatch, capsys, args + ["--cmax", "8", "--resume", "auto"])
    assert_one_line(code, err, "do not match the options")


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "creps.train", "--help"], capture_output=True, text=True, check=True)
    assert "--resume" in out.stdout and "torchrun" in out.stdout


def wait_for(predicate, timeout, proc):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # float sums depend on the thread count: fix it


def train_in_subprocess(args, *launcher):
    """Run creps-train (or `launcher` ... creps.train) in a fresh one-thread process."""
    subprocess.run([sys.executable, *launcher, "-m", "creps.train", *args], check=True, env=ONE_THREAD,
                   capture_output=True, timeout=240)


@pytest.mark.slow
def test_sigkill_then_resume_auto_matches_uninterrupted(image_folder, tmp_path):
    # 0.08 kimg = 20 steps; a snapshot every 2 steps, each under its own name.
    args = [*TINY, "--data", str(image_folder), "--cache-dir", str(tmp_path / "cache"), "--kimg", "0.08",
            "--snap-kimg", "0.008"]
    train_in_subprocess(args + ["--outdir", str(tmp_path / "whole")])
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "creps.train", *args, "--outdir", str(out)],
                            env=ONE_THREAD, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: newest_snapshot(out) is not None, 120, proc)
    time.sleep(0.2)  # land somewhere in the middle of later steps or snapshot writes
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed, not finished
    snapshot = newest_snapshot(out)
    before = load_file(str(snapshot))  # complete, whatever the moment
    assert 0 < snapshot_nimg(snapshot) < 80
    train_in_subprocess(args + ["--outdir", str(out), "--resume", "auto"])
    a = load_file(str(tmp_path / "whole" / "network-snapshot-000000080.safetensors"))
    b = load_file(str(out / "network-snapshot-000000080.safetensors"))
    assert before.keys() == a.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert not list(out.glob(".*partial"))


@pytest.mark.slow
def test_torchrun_two_processes_match_one(image_folder, tmp_path):
    # One process in two rounds of 4 sums its gradients as g1 + g2, as the all-reduce of two
    # processes of 4 does: the snapshots must be identical, bit for bit, after 4 steps (the
    # first with R1 and path length; ADA's p starts at 0, the rounds test covers augmentation).
    common = [*TINY, "--batch", "8", "--data", str(image_folder), "--cache-dir", str(tmp_path / "cache"),
              "--kimg", "0.032", "--snap-kimg", "1"]
    train_in_subprocess(common + ["--batch-gpu", "4", "--outdir", str(tmp_path / "one")])
    train_in_subprocess(common + ["--outdir", str(tmp_path / "two")],
                        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    a = load_file(str(tmp_path / "one" / "network-snapshot-000000032.safetensors"))
    b = load_file(str(tmp_path / "two" / "network-snapshot-000000032.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []

"""The output-path rule (creps.images.image_paths) and the commands that follow it: one line
naming the user's path on a refusal, nothing created, no empty folder left on a failure."""

from __future__ import annotations

import errno
import os
import sys

import pytest
from PIL import Image

from creps.errors import CrepsError
from creps.files import atomic_path
from creps.images import OUT_RULE, image_paths
from creps.runtime import generate as runtime_generate
from creps.runtime.cli import main
from signal_loop import screen_lines
from test_cli import run  # tests/runtime/test_cli.py: creps-run in this process


def given(where, out: str) -> str:
    """`out` under `where` as a user types it (pathlib would drop a trailing slash)."""
    return str(where / out) + ("/" if out.endswith("/") else "")


@pytest.fixture
def where(tmp_path):
    (tmp_path / "afile").write_text("a file")
    (tmp_path / "a.png").write_text("a file named like an image")
    (tmp_path / "dir.png").mkdir()
    return tmp_path


# (--out relative to tmp_path, seeds) -> (folder, file names) relative to tmp_path
ACCEPTED = [
    (("x.png", [3]), (".", ["x.png"])),
    (("X.PNG", [3]), (".", ["X.PNG"])),
    (("new/deeper/x.png", [3]), ("new/deeper", ["new/deeper/x.png"])),
    (("a.png", [3]), (".", ["a.png"])),  # an existing file is replaced (atomically)
    (("faces/", [3]), ("faces", ["faces/seed0003.png"])),  # a folder that does not exist yet
    (("faces.png/", [3, 4]), ("faces.png", ["faces.png/seed0003.png", "faces.png/seed0004.png"])),
    (("dir.png", [3]), ("dir.png", ["dir.png/seed0003.png"])),  # an existing folder, whatever its name
    ((".", [1]), (".", ["seed0001.png"])),
    (("faces", [0, 1]), ("faces", ["faces/seed0000.png", "faces/seed0001.png"])),
]


@pytest.mark.parametrize("given_,want", ACCEPTED, ids=[f"{g[0]} seeds {g[1]}" for g, _ in ACCEPTED])
def test_accepted(where, given_, want):
    out, seeds = given_
    folder, paths = image_paths(given(where, out), seeds)
    assert folder == where / want[0]
    assert paths == [where / p for p in want[1]]
    assert sorted(p.name for p in where.iterdir()) == ["a.png", "afile", "dir.png"]  # creates nothing


REFUSED = [
    ("faces.png", [0, 1], "2 seeds"),  # several images cannot share one file
    ("faces", [3], "*.png"),  # neither a .png file nor a folder
    ("out.jpg", [3], "PNG"),
    ("afile", [0, 1], "is a file"),  # several seeds need a folder
    ("afile/x.png", [3], "afile is a file"),
    ("a.png/b.png", [3], "a.png is a file"),
    ("afile/deeper/", [3], "afile is a file"),
]


@pytest.mark.parametrize("out,seeds,message", REFUSED, ids=[f"{r[0]} seeds {r[1]}" for r in REFUSED])
def test_refused_naming_the_users_path(where, out, seeds, message):
    with pytest.raises(CrepsError) as refusal:
        image_paths(given(where, out), seeds)
    assert str(refusal.value).startswith(f"--out {given(where, out)}: ") and message in str(refusal.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(CrepsError, match="cannot write into"):
        image_paths(str(locked / "new" / "x.png"), [0])


def test_outdir_is_a_folder_whatever_its_name(where):
    assert image_paths(str(where / "out.png"), [1], "--outdir", folder=True)[1] == [where / "out.png/seed0001.png"]
    with pytest.raises(CrepsError, match=r"^--outdir .*afile: this is a file"):
        image_paths(str(where / "afile"), [1], "--outdir", folder=True)


def test_an_os_error_names_the_target_not_the_temporary(tmp_path):
    with pytest.raises(OSError) as failure:  # /proc takes no new files, so the temporary fails
        with atomic_path("/proc/a.png"):
            pass
    assert failure.value.filename == "/proc/a.png"
    with pytest.raises(OSError) as failure:  # a write error carries no file name at all
        with atomic_path(tmp_path / "x.png"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert isinstance(failure.value, OSError) and failure.value.errno == errno.ENOSPC
    assert failure.value.filename == str(tmp_path / "x.png") and list(tmp_path.iterdir()) == []


# creps-run on the cases the issue found


def test_one_seed_into_a_new_folder(monkeypatch, capsys, tiny_bundle, tmp_path):
    code, err = run(monkeypatch, capsys, "--bundle", tiny_bundle, "--size", "20x12", "--seeds", "3",
                    "--out", f"{tmp_path}/faces/")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "faces").iterdir()] == ["seed0003.png"]
    assert Image.open(tmp_path / "faces" / "seed0003.png").size == (20, 12)


@pytest.mark.parametrize("out,message", [("faces.png", "faces.png: 2 seeds"), ("a.png/b.png", "a.png is a file"),
                                         ("/proc/a.png", "/proc/a.png")])
def test_refusals_are_one_line_about_the_users_path(monkeypatch, capsys, tiny_bundle, tmp_path, out, message):
    (tmp_path / "a.png").write_text("a file")
    seeds = "0-1" if out == "faces.png" else "0"
    monkeypatch.chdir(tmp_path)
    code, err = run(monkeypatch, capsys, "--bundle", tiny_bundle, "--size", "8x8", "--seeds", seeds, "--out", out)
    assert code == 1 and len(screen_lines(err)) == 1, err
    line = screen_lines(err)[0]
    assert message in line and ".partial" not in line and "File exists" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_failure_leaves_no_folder_it_created(monkeypatch, capsys, tiny_bundle, tmp_path):
    def fail(*args, **kwargs):
        raise CrepsError("the model gave NaN")

    monkeypatch.setattr(runtime_generate.Runtime, "tiles", fail)
    code, err = run(monkeypatch, capsys, "--bundle", tiny_bundle, "--seeds", "0-1", "--out", f"{tmp_path}/new/faces/")
    assert code == 1 and "NaN" in err
    assert list(tmp_path.iterdir()) == []


def test_the_rule_is_in_the_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["creps-run", "--help"])
    main()
    assert " ".join(OUT_RULE.split()) in " ".join(capsys.readouterr().out.split())


def test_creps_generate_leaves_no_outdir_on_a_failure(monkeypatch, capsys, tiny_generator, tmp_path):
    from creps import generate
    from creps.checkpoint import save_checkpoint

    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, tiny_generator, tiny_generator.cfg)

    def fail(*args, **kwargs):
        raise CrepsError("the model gave NaN")

    monkeypatch.setattr(generate, "render", fail)
    monkeypatch.setattr(sys, "argv", ["creps-generate", "--network", str(checkpoint), "--outdir",
                                      str(tmp_path / "new" / "out")])
    with pytest.raises(SystemExit) as exit:
        generate.main()
    assert exit.value.code == 1 and "NaN" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]


@pytest.mark.parametrize("directory", [False, True])
def test_a_failed_atomic_write_leaves_no_folder_it_made(tmp_path, directory):
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "kept" / "new" / "deeper" / "out.png", directory=directory) as tmp:
            (tmp / "graph.onnx" if directory else tmp).write_bytes(b"half")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.rglob("*")] == ["kept"]

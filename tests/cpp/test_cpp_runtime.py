"""The C++ runtime (runtime/cpp) against the Python runtime, from the same bundle: creps-run-cpp's
images equal creps.runtime's bit for bit (uint8), its refusals are creps-run's (the same one line,
exit 1, no file), a signal removes the image being written, and the example apps build against the
installed CMake package and paint what Python paints.

Needs the build (runtime/cpp/build.sh [BUILD_DIR]; CREPS_CPP_BUILD names another BUILD_DIR)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from creps import grid
from creps.runtime import Runtime
from creps.runtime.bundle import sha256_file
from creps.runtime.cpu import saturates_8bit_weights
from creps.runtime.cli import cli as python_cli
from in_process import in_process

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CREPS_CPP_BUILD") or ROOT / "runtime" / "cpp" / "build")
CLI = BUILD / "tools" / "creps-run-cpp"
pytestmark = pytest.mark.skipif(not CLI.is_file(), reason=f"the C++ runtime is not built ({CLI} is missing): "
                                "run runtime/cpp/build.sh, or set CREPS_CPP_BUILD to its build folder")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A copy of the tiny bundle the package ships (exported here where an older checkout has none)."""
    copy = tmp_path_factory.mktemp("cpp") / "tiny"
    shipped = ROOT / "creps" / "data" / "tiny"
    if (shipped / "manifest.json").is_file():
        shutil.copytree(shipped, copy)
    else:
        pytest.importorskip("torch", reason="no shipped tiny bundle, and exporting one needs PyTorch")
        from make_tiny_bundle import write

        write(copy, verify=False)
    return copy


def run_cpp(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# (size, seeds, psi, window, fit, tile, batch, threads): 1xN, Nx1, odd, non-square both ways, windows, a
# stretch, tiles that split the image unevenly, batches that do not divide the seeds, 1 and 2 threads.
CASES = [
    ((1, 23), "4", 1.0, None, "extend", None, 1, None),
    ((29, 1), "4", 0.7, None, "extend", None, 1, 1),
    ((37, 21), "3,11,4", 0.7, None, "extend", (16, 8), 2, 2),
    ((21, 45), "0-2", 0.5, None, "stretch", (7, 5), 3, None),
    ((40, 24), "9", 0.7, (0.2, -0.3, 0.9, 0.4), "extend", (13, 11), 1, 1),
    ((32, 32), "1,2", 1.0, (0.25, 0.25, 0.75, 0.75), "extend", None, 2, None),
]


@pytest.mark.parametrize("size,seeds,psi,window,fit,tile,batch,threads", CASES)
def test_images_equal_the_python_runtime(bundle, tmp_path, size, seeds, psi, window, fit, tile, batch, threads):
    args = ["--bundle", bundle, "--backend", "ort-cpu", "--size", "%dx%d" % size, "--seeds", seeds, "--trunc", psi,
            "--fit", fit, "--batch", batch]
    args += ["--window", ",".join(map(str, window))] if window else []
    args += ["--tile", "%dx%d" % tile] if tile else []
    args += ["--threads", threads] if threads else []
    run_cpp(*args, "--out", f"{tmp_path}/")
    seed_list = grid.parse_seeds(seeds)
    with Runtime(bundle, backend="ort-cpu", tile=tile, threads=threads) as runtime:
        want = runtime.generate(seed_list, size, psi, grid.Window(*window) if window else None, fit, batch=batch)
    got = np.stack([read_png(tmp_path / f"seed{s:04d}.png") for s in seed_list])
    assert got.shape == want.shape == (len(seed_list), size[1], size[0], 3)
    assert np.array_equal(got, want), f"{(got != want).sum()} of {got.size} values differ"


def test_default_size_and_one_file(bundle, tmp_path):
    result = run_cpp("--bundle", bundle, "--backend", "ort-cpu", "--seeds", "7", "--out", tmp_path / "one.png")
    assert result.stdout == f"wrote {tmp_path / 'one.png'}\n"
    with Runtime(bundle, backend="ort-cpu") as runtime:
        assert np.array_equal(read_png(tmp_path / "one.png"), runtime.generate(7)[0])
    assert files_under(tmp_path) == ["one.png"]  # no temporary left


def test_default_bundle_is_creps_runs_cached_export(bundle, tmp_path, monkeypatch):
    """No --bundle: the folder creps-run exports the default model into (creps.runtime.default), or one line."""
    from creps.runtime.default import cache_root, default_bundle, default_checkpoint

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cached = cache_root() / f"default-{sha256_file(default_checkpoint())[:16]}"
    missing = subprocess.run([str(CLI), "--out", str(tmp_path / "a.png")], capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith(f"error: no --bundle given and the default model is not exported yet (into "
                                     f"{cached}): run creps-run once")
    shutil.copytree(bundle, cached)  # stands in for the export, so no PyTorch is needed here
    assert default_bundle() == cached  # the folder Python would use
    made = subprocess.run([str(CLI), "--size", "9x5", "--out", str(tmp_path / "a.png")], capture_output=True, env=env)
    assert made.returncode == 0, made.stderr
    with Runtime(bundle) as runtime:
        assert np.array_equal(read_png(tmp_path / "a.png"), runtime.generate(0, (9, 5))[0])


@pytest.mark.parametrize("out", ["faces/", "faces"])
def test_several_seeds_write_a_folder(bundle, tmp_path, out):
    result = run_cpp("--bundle", bundle, "--size", "8x6", "--seeds", "0,3,5-6", "--out", tmp_path / out)
    names = ["seed0000.png", "seed0003.png", "seed0005.png", "seed0006.png"]
    assert files_under(tmp_path) == ["faces"] + [f"faces/{n}" for n in names]
    assert result.stdout == f"wrote 4 images into {tmp_path / 'faces'}\n"


def damaged(bundle: Path, tmp_path: Path, how: str) -> Path:
    """A copy of `bundle` with one kind of damage."""
    copy = tmp_path / f"bundle-{how}"
    shutil.copytree(bundle, copy)
    manifest = copy / "manifest.json"
    if how == "corrupt":
        manifest.write_text("{not json")
    elif how == "hash":
        data = bytearray((copy / "lines.onnx").read_bytes())
        data[len(data) // 2] ^= 1
        (copy / "lines.onnx").write_bytes(bytes(data))
    elif how == "future":
        content = json.loads(manifest.read_text())
        content["format_version"] = 99
        manifest.write_text(json.dumps(content))
    elif how == "missing-file":
        (copy / "pixels.onnx").unlink()
    elif how.startswith("int8-bits-"):  # int8 entries (copies of the fp32 graphs) with weight_bits as named
        with_int8(copy, json.loads(how.removeprefix("int8-bits-")))
    return copy


def with_int8(folder: Path, weight_bits) -> None:
    """Give the bundle int8 graphs: byte copies of its fp32 line and pixel graphs, recorded with `weight_bits`."""
    content = json.loads((folder / "manifest.json").read_text())
    for stage in ("lines", "pixels"):
        shutil.copyfile(folder / f"{stage}.onnx", folder / f"{stage}.int8.onnx")
        content["graphs"][f"{stage}.int8"] = {**content["graphs"][stage], "file": f"{stage}.int8.onnx",
                                              "precision": "int8", "weight_bits": weight_bits}
    (folder / "manifest.json").write_text(json.dumps(content))


# What creps-run refuses, each with its own one line. Placeholders: OUT an empty folder, FILE a file,
# NOWHERE a missing folder, corrupt/hash/future/missing-file a damaged copy of the bundle, NO-OUT: no --out.
BAD = [
    ["--size", "0x5"], ["--size", "abc"], ["--size", "2000000x2"], ["--size", "5x1048577"],
    ["--seeds", "5-3"], ["--seeds", "x"], ["--seeds", "4294967296"], ["--seeds", "1,,2"],
    ["--trunc", "abc"], ["--window", "1,2"], ["--window", "0,0,1,nan"], ["--fit", "foo"],
    ["--batch", "0"], ["--threads", "-2"], ["--batch", "two"], ["--max-memory", "0"], ["--max-memory", "lots"],
    ["--backend", "foo"], ["--precision", "int8"], ["--precision", "fp16"], ["--precision", "int4"],
    ["--tile", "0x4"], ["--tile", "32x32", "--max-memory", "4K"],
    ["--tile", "32x32", "--max-memory", "4K", "--out", "OUT/new/deeper/img.png"],  # the folders made go again
    ["--seeds", "0,1", "--out", "OUT/x.png"], ["--out", "OUT/x.jpg"], ["--out", "FILE/x.png"], ["--out", "FILE"],
    ["--seeds", "0,1", "--out", "FILE"], ["NO-OUT"],
    ["--bundle", "NOWHERE"], ["--bundle", "corrupt"], ["--bundle", "hash"], ["--bundle", "future"],
    ["--bundle", "missing-file"],
    ["--bundle", "int8-bits-9", "--precision", "int8"], ["--bundle", "int8-bits-\"8\"", "--precision", "int8"],
    ["--seed", "3"], ["--bundle-dir", "x"], ["--qqq"], ["extra"], ["--seeds", "1", "--size"],  # command-line misuse
]


@pytest.mark.parametrize("bad", BAD, ids=lambda bad: " ".join(str(a) for a in bad))
def test_bad_input_is_one_line_and_no_file(bundle, tmp_path, monkeypatch, capsys, bad):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "file").write_text("not a folder")
    places = {"OUT": str(out), "FILE": str(tmp_path / "file"), "NOWHERE": str(tmp_path / "nowhere")}
    args = []
    for arg in bad:
        if arg in ("corrupt", "hash", "future", "missing-file") or arg.startswith("int8-bits-"):
            arg = str(damaged(bundle, tmp_path, arg))
        for name, place in places.items():
            arg = arg.replace(name, place)
        args.append(arg)
    if "--out" not in args and "NO-OUT" not in args:
        args = ["--out", f"{out}/img.png", *args]
    if "--bundle" not in args:
        args = ["--bundle", str(bundle), *args]
    args = [a for a in args if a != "NO-OUT"]
    code, _, want = in_process(monkeypatch, capsys, python_cli, "creps-run", *args)
    result = run_cpp(*args, check=False)
    assert code == 1 and want.startswith("error: ") and want.count("\n") == 1, want
    if "corrupt" in bad:  # the JSON parser's own words in the parentheses differ (nlohmann vs Python's json)
        want, result.stderr = want.split(" (")[0], result.stderr.split(" (")[0]
        assert result.stderr.endswith("unreadable manifest")
    assert (result.returncode, result.stderr) == (1, want)
    assert files_under(out) == []


@pytest.mark.parametrize("bits", [7, 8])
def test_int8_weight_width_is_judged_as_python_judges_it(bundle, tmp_path, monkeypatch, capsys, bits):
    """8-bit int8 weights run where ONNX Runtime's kernels are exact and are refused, in the same line,
    where they saturate (creps.runtime.cpu); 7-bit ones run everywhere. Whichever this CPU is, both
    runtimes decide alike and paint alike."""
    folder = damaged(bundle, tmp_path, f"int8-bits-{bits}")
    args = ["--bundle", str(folder), "--backend", "ort-cpu", "--precision", "int8", "--size", "13x7", "--seeds", "2"]
    code, _, want = in_process(monkeypatch, capsys, python_cli, "creps-run", *args, "--out", str(tmp_path / "py.png"))
    result = run_cpp(*args, "--out", tmp_path / "cpp.png", check=False)
    if bits == 8 and saturates_8bit_weights():
        assert code == 1 and "8-bit weights, which ONNX Runtime's integer kernels saturate" in want
        assert (result.returncode, result.stderr) == (code, want)
    else:  # (creps-run's progress bar on stderr is its own)
        assert (code, result.returncode) == (0, 0), result.stderr
        assert np.array_equal(read_png(tmp_path / "cpp.png"), read_png(tmp_path / "py.png"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_removes_the_image_being_written(bundle, tmp_path, signum):
    out = tmp_path / "big.png"
    process = subprocess.Popen([str(CLI), "--bundle", str(bundle), "--size", "4096x4096", "--backend", "ort-cpu",
                                "--threads", "1", "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".big.png.*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)  # the temporary exists: the image is being written
    assert process.poll() is None, "the render ended before the signal; make it larger"
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert err.splitlines()[-1] == "interrupted"
    assert files_under(tmp_path) == []


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    """The example apps built against the installed package, as a user builds them."""
    work = tmp_path_factory.mktemp("examples")
    prefix = work / "prefix"
    subprocess.run(["cmake", "--install", str(BUILD), "--prefix", str(prefix)], check=True, capture_output=True)
    build = work / "build"
    configure = subprocess.run(["cmake", "-S", str(ROOT / "runtime" / "cpp" / "examples"), "-B", str(build),
                                f"-DCMAKE_PREFIX_PATH={prefix}"], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    cache = (build / "CMakeCache.txt").read_text()
    assert f"creps_runtime_DIR:PATH={prefix}" in cache  # the installed package, not the build tree
    return build


def test_c_example_links_against_the_installed_package(bundle, examples, tmp_path):
    out = tmp_path / "seed5.ppm"
    result = subprocess.run([str(examples / "creps_example_c"), str(bundle), "5", "33", "17", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    header, pixels = out.read_bytes().split(b"\n", 3)[:3], out.read_bytes().split(b"\n", 3)[3]
    assert header == [b"P6", b"33 17", b"255"]
    with Runtime(bundle) as runtime:
        want = runtime.generate(5, (33, 17))[0]
    assert np.array_equal(np.frombuffer(pixels, np.uint8).reshape(17, 33, 3), want)
    bad = subprocess.run([str(examples / "creps_example_c"), str(tmp_path / "none"), "5", "8", "8", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert (bad.returncode, bad.stderr) == (1, f"error: {tmp_path / 'none'}: no such bundle folder\n")


def test_cpp_example_renders_and_saves(bundle, examples, tmp_path):
    result = subprocess.run([str(examples / "creps_example_cpp"), str(bundle), str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    with Runtime(bundle, max_memory=512 << 20) as runtime:  # "auto", as the example opens it
        want, backend = runtime.generate([0, 1], (256, 64), 0.7), runtime.backend_name
    for seed in (0, 1):
        assert np.array_equal(read_png(tmp_path / f"seed{seed:04d}.png"), want[seed])
    assert result.stdout == "%s: 2 images of 256x64, first pixel %d %d %d\n" % (backend, *want[0, 0, 0])

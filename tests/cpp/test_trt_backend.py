"""The C++ TensorRT backend (runtime/cpp/src/trt_backend.cpp) on a simulated GPU (tests/cpp/fake_trt:
stand-ins for the CUDA runtime and TensorRT headers, and a simulator behind them): double-buffered calls
give each call its own outputs, in order, with a stream that runs only when synchronized; every resource
is freed after use and after a failure at any allocation; engines are checked against the manifest as
runtime/trt.py checks them, with the same messages; host code is allowed only on opt-in.

Compiles the harness against the built library (runtime/cpp/build.sh; CREPS_CPP_BUILD names another
build folder), once per source change (cached in the build folder)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from creps.runtime.backends import check_io
from creps.runtime.bundle import read_bundle
from creps.runtime.trt import Device, check_engine, check_host_code

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CREPS_CPP_BUILD") or ROOT / "runtime" / "cpp" / "build")
LIBRARY = BUILD / "libcreps_runtime.so"
FAKE = Path(__file__).resolve().parent / "fake_trt"
SOURCES = [FAKE / "harness.cpp", FAKE / "fake_trt.cpp", ROOT / "runtime" / "cpp" / "src" / "trt_backend.cpp"]
pytestmark = pytest.mark.skipif(not LIBRARY.is_file(), reason=f"the C++ runtime is not built ({LIBRARY} is "
                                "missing): run runtime/cpp/build.sh, or set CREPS_CPP_BUILD to its build folder")
GPU = Device("Fake GPU", "8.7")
VERSION = "10.3.0.30"  # as trt.__version__ says on JetPack, and getInferLib*Version here
STAGES = ("mapping", "lines", "pixels")
# Profile 0 of each dynamic axis: (min, opt, max).
PROFILE = {"batch": (1, 2, 4), "height": (1, 8, 16), "width": (1, 8, 16)}


@pytest.fixture(scope="module")
def harness() -> Path:
    flags = ["-std=c++17", "-O0", "-Wall", "-Wextra", "-Werror", "-DCREPS_WITH_TENSORRT", f"-I{FAKE}",
             f"-I{ROOT}/runtime/cpp/src", f"-I{ROOT}/runtime/cpp/include"]
    digest = hashlib.sha256()
    for path in [*SOURCES, *FAKE.glob("*.h"), *(ROOT / "runtime" / "cpp" / "src").glob("*.hpp"),
                 *(ROOT / "runtime" / "cpp" / "include" / "creps").glob("*")]:
        digest.update(path.read_bytes())
    folder = BUILD / "fake_trt"
    binary = folder / f"harness-{digest.hexdigest()[:16]}"
    if not binary.is_file():
        folder.mkdir(exist_ok=True)
        for old in folder.glob("harness-*"):  # built from sources that have changed since
            old.unlink()
        objects = [folder / f"{source.stem}.o" for source in SOURCES]
        with ThreadPoolExecutor(len(SOURCES)) as pool:  # one compiler per file: the slow part
            results = list(pool.map(lambda so: subprocess.run(["g++", *flags, "-c", str(so[0]), "-o", str(so[1])],
                                                              capture_output=True, text=True), zip(SOURCES, objects)))
        for result in results:
            assert result.returncode == 0, result.stderr
        link = subprocess.run(["g++", *map(str, objects), f"-L{BUILD}", "-lcreps_runtime", "-lcrypto",
                               f"-Wl,-rpath,{BUILD}", "-o", str(binary)], capture_output=True, text=True)
        assert link.returncode == 0, link.stderr
    return binary


def engine_spec(manifest: dict, stage: str) -> dict:
    """A simulator engine for `stage`, IO in the reverse of the contract's order (the backend goes by name)."""
    model, contract = manifest["model"], manifest["stages"][stage]
    inputs, carriers = [], {}
    for tensor in contract["inputs"]:
        shape = [-1 if a in PROFILE else a if isinstance(a, int) else model[a] for a in tensor["axes"]]
        ranges = [[PROFILE[a][i] if a in PROFILE else d for a, d in zip(tensor["axes"], shape)] for i in range(3)]
        inputs.append({"name": tensor["name"], "shape": shape, "min": ranges[0], "opt": ranges[1], "max": ranges[2]})
        for index, axis in enumerate(tensor["axes"]):
            carriers.setdefault(axis, [tensor["name"], index])
    outputs = [{"name": t["name"], "dims": [carriers[a] if a in PROFILE else model[a] for a in t["axes"]]}
               for t in contract["outputs"]]
    return {"fake_engine": 1, "host_code": False, "inputs": inputs[::-1], "outputs": outputs[::-1]}


def make_bundle(tmp_path: Path, entry=None, spec=None, engines=STAGES) -> Path:
    """The tiny bundle with simulator engines; entry(stage) / spec(stage, spec) adjust a manifest entry / engine."""
    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT / "creps" / "data" / "tiny", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"] = {}
    for stage in engines:
        content = engine_spec(manifest, stage)
        content = spec(stage, content) if spec else content
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (bundle / f"{stage}.engine").write_bytes(data)
        record = {"graph": stage, "stage": stage, "file": f"{stage}.engine", "sha256": hashlib.sha256(data).hexdigest(),
                  "precision": "fp32", "tensorrt_version": VERSION, "gpu_name": GPU.name,
                  "compute_capability": GPU.compute_capability, "version_compatible": False,
                  "hardware_compatibility": "none"}
        manifest["engines"][stage] = {**record, **(entry(stage) if entry else {})}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def run(harness, bundle, *args, allow=False, **env) -> tuple[list[str], str]:
    environment = {**os.environ, "FAKE_TRT_VERSION": VERSION, "FAKE_GPU": f"{GPU.name}|{GPU.compute_capability}",
                   **{k: str(v) for k, v in env.items()}}
    result = subprocess.run([str(harness), str(bundle), "1" if allow else "0", *args], capture_output=True, text=True,
                            env=environment, timeout=60)
    assert result.returncode == 0 and "UNDEFINED" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert "live device=0 pinned=0 streams=0 events=0 runtimes=0 engines=0 contexts=0" in lines, result.stdout
    return lines, result.stderr


def kernel(inputs: list[np.ndarray], o: int, size: int) -> np.ndarray:
    """The simulator's kernel, independently: out_o[i] = o + sum_k (k + 1) * in_k[i mod size_k], in float32."""
    out = np.full(size, o, np.float32)
    for k, x in enumerate(inputs):
        out += np.float32(k + 1) * np.resize(x.ravel(), size)
    return out


@pytest.mark.parametrize("stage,calls", [
    ("lines", "1,5,7;1,3,2;2,16,16;1,1,1;4,6,4"),  # more calls than slots, shapes changing every call
    ("pixels", "1,8,8;2,3,5;1,16,1"),
    ("mapping", "3,1,1"),
    ("lines", "1,4,4"),  # one call: submitted and collected with no other in flight
])
def test_stream_gives_each_call_its_outputs_in_order(harness, tmp_path, stage, calls):
    bundle = make_bundle(tmp_path)
    lines, _ = run(harness, bundle, "stream", stage, calls)
    done = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(done) == len(calls.split(";"))
    order = [t["name"] for t in engine_spec(json.loads((bundle / "manifest.json").read_text()), stage)["inputs"]]
    outputs = [t["name"] for t in engine_spec(json.loads((bundle / "manifest.json").read_text()), stage)["outputs"]]
    for call, spec in zip(done, calls.split(";")):
        inputs = [np.array(call["inputs"][name]["values"], np.float32) for name in order]
        for o, name in enumerate(outputs):
            got = np.array(call["outputs"][name]["values"], np.float32)
            assert np.array_equal(got, kernel(inputs, o, got.size)), f"{stage} {spec} {name}"
    first = np.array(done[0]["inputs"][order[-1]]["values"], np.float32)
    assert first[0] == 0.25  # the calls came back in the order they were made (the harness counts from 0)


def test_every_resource_is_freed_after_use_and_after_any_failed_allocation(harness, tmp_path):
    bundle = make_bundle(tmp_path)
    lines, _ = run(harness, bundle, "open")
    made = int(next(line for line in lines if line.startswith("made ")).split()[1])
    # the stream; per engine a context and two slots of (device + pinned buffer per tensor, an event)
    assert made == 1 + sum(1 + 2 * (2 * tensors + 1) for tensors in (3, 5, 4))
    for fail_at in range(1, made + 1):
        lines, _ = run(harness, bundle, "open", FAKE_FAIL_AT=fail_at)
        assert lines[0].startswith("error: "), (fail_at, lines)


def test_axis_ranges_are_the_engine_profile(harness, tmp_path):
    bundle = make_bundle(tmp_path)
    for stage, tensor, axis, want in [("lines", "ys", 0, PROFILE["height"]), ("lines", "ws", 0, PROFILE["batch"]),
                                      ("pixels", "rows", 3, PROFILE["width"]), ("mapping", "psi", 0, (1, 1, 1)),
                                      ("mapping", "z", 1, (32, 32, 32))]:
        lines, _ = run(harness, bundle, "range", stage, tensor, str(axis))
        assert json.loads(lines[1]) == [want[0], want[2]]


def test_a_call_outside_the_profile_is_refused_in_one_line(harness, tmp_path):
    bundle = make_bundle(tmp_path)
    lines, _ = run(harness, bundle, "stream", "lines", "1,4,4;1,17,4")
    # the second call is refused as it is submitted, before the first (in flight) is collected
    assert lines[1] == "error: Error: tensorrt: lines input ys shape (17,) is outside the engine's profile " \
                       "[(1,), (8,), (16,)]"


def expected_refusal(bundle: Path, here: str = VERSION, device: Device = GPU, allow: bool = False) -> str:
    """What runtime/trt.py says for this bundle's first refused engine entry (its own functions)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    try:
        for stage in STAGES:
            entry = manifest["engines"][stage]
            check_engine(entry, bundle, here, device)
            check_host_code(entry, bundle, allow)
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"
    raise AssertionError("runtime/trt.py accepts this bundle")


@pytest.mark.parametrize("entry,here,device", [
    ({"tensorrt_version": "10.3.1"}, VERSION, GPU),  # another patch release: exact versions only
    ({"tensorrt_version": "10.2.0", "version_compatible": True}, VERSION, GPU),  # compatible, but host code
    ({"tensorrt_version": "10.4.0", "version_compatible": True}, VERSION, GPU),  # built by a later release
    ({}, VERSION, Device("Other GPU", "8.7")),
    ({"hardware_compatibility": "same_compute_capability"}, VERSION, Device("Other GPU", "8.6")),
    ({"hardware_compatibility": "ampere_plus"}, VERSION, Device("Turing", "7.5")),
    ({"tensorrt_version": "9.3.0", "version_compatible": True}, "11.1.0.106", GPU),  # 11 runs 10.x engines only
])
def test_engine_refusals_are_pythons(harness, tmp_path, entry, here, device):
    bundle = make_bundle(tmp_path, entry=lambda stage: entry if stage == "lines" else {})
    lines, _ = run(harness, bundle, "open", FAKE_TRT_VERSION=here,
                   FAKE_GPU=f"{device.name}|{device.compute_capability}")
    assert lines[0] == expected_refusal(bundle, here, device)


@pytest.mark.parametrize("entry,here,device,stages", [
    ({"hardware_compatibility": "same_compute_capability"}, VERSION, Device("Other GPU", "8.7"), STAGES),
    ({"hardware_compatibility": "ampere_plus"}, VERSION, Device("Hopper", "9.0"), STAGES),
    ({"tensorrt_version": "10.1.0", "version_compatible": True}, "11.1.0.106", GPU, STAGES),  # LATER_MAJORS
    ({"tensorrt_version": "10.1.0", "version_compatible": True}, VERSION, GPU, ("lines",)),  # one of three
])
def test_host_code_only_on_opt_in_and_for_compatible_engines(harness, tmp_path, entry, here, device, stages):
    compatible = entry.get("version_compatible", False)
    bundle = make_bundle(tmp_path, entry=lambda stage: entry if stage in stages else {},
                         spec=lambda stage, spec: {**spec, "host_code": compatible and stage in stages})
    for allow in (False, True):
        lines, _ = run(harness, bundle, "open", allow=allow, FAKE_TRT_VERSION=here,
                       FAKE_GPU=f"{device.name}|{device.compute_capability}")
        if compatible and not allow:
            assert lines[0] == expected_refusal(bundle, here, device, allow)
            assert not any(line.startswith("deserialize") for line in lines)  # refused before any engine is read
            continue
        assert lines[0] == "opened tensorrt"
        # Host code allowed exactly for the version-compatible engines, when the user allowed it.
        assert [line for line in lines if line.startswith("deserialize")] == [
            f"deserialize host_code_allowed={int(compatible and allow and stage in stages)}" for stage in STAGES]


@pytest.mark.parametrize("built,here,runs", [
    ("10.3.0", "10.3.0.30", True),  # a pip wheel's trt.__version__ has no build number: it counts only in both
    ("10.3.0.30", "10.3.0.30", True),
    ("10.3.0.29", "10.3.0.30", False),
    ("10.3", "10.3.0.30", False),
])
def test_build_numbers(harness, tmp_path, built, here, runs):
    bundle = make_bundle(tmp_path, entry=lambda stage: {"tensorrt_version": built})
    lines, _ = run(harness, bundle, "open", FAKE_TRT_VERSION=here)
    assert (lines[0] == "opened tensorrt") == runs, lines[0]


def test_no_engine_and_no_gpu(harness, tmp_path):
    bundle = make_bundle(tmp_path, engines=("mapping", "lines"))
    lines, _ = run(harness, bundle, "open")
    assert lines[0] == (f"error: BackendUnavailable: tensorrt: the bundle has no pixels engine; build them with "
                        f"creps-export --out {bundle} --trt")
    lines, _ = run(harness, bundle, "open", FAKE_GPU_COUNT=0)
    assert lines[0] == ("error: BackendUnavailable: tensorrt: no usable CUDA device (CUDA error 100: no CUDA-capable "
                        "device is detected)")


def test_altered_undeserializable_and_mismatched_engines(harness, tmp_path):
    rebuild = "rebuild the engines on this machine: creps-export --out {} --trt"
    bundle = make_bundle(tmp_path / "altered")
    (bundle / "pixels.engine").write_bytes((bundle / "pixels.engine").read_bytes() + b" ")
    lines, _ = run(harness, bundle, "open")
    assert lines[0] == (f"error: BundleError: {bundle}: pixels.engine (pixels engine) does not match its sha256 in "
                        f"the manifest (corrupt or altered); {rebuild.format(bundle)}")
    assert [line for line in lines if line.startswith("deserialize")] == ["deserialize host_code_allowed=0"] * 2
    bundle = make_bundle(tmp_path / "garbage", spec=lambda stage, spec: b"\x00garbage" if stage == "lines" else spec)
    lines, err = run(harness, bundle, "open")
    assert lines[0] == (f"error: BackendUnavailable: tensorrt: {bundle / 'lines.engine'} does not deserialize here "
                        f"(see the TensorRT log above); {rebuild.format(bundle)}")
    assert "[TensorRT] not an engine" in err
    half = lambda stage, spec: {**spec, "outputs": [{**spec["outputs"][0], "dtype": "float16"}]}  # noqa: E731
    bundle = make_bundle(tmp_path / "half", spec=half)
    lines, _ = run(harness, bundle, "open")
    assert lines[0] == (f"error: BackendUnavailable: tensorrt: {bundle / 'mapping.engine'}: tensor ws is not float32; "
                        f"{rebuild.format(bundle)}")
    renamed = lambda stage, spec: {**spec, "inputs": [{**spec["inputs"][0], "name": "zz"}, *spec["inputs"][1:]]}  # noqa
    bundle = make_bundle(tmp_path / "renamed", spec=renamed)
    lines, _ = run(harness, bundle, "open")
    spec = renamed("mapping", engine_spec(json.loads((bundle / "manifest.json").read_text()), "mapping"))
    with pytest.raises(Exception) as want:
        check_io(read_bundle(bundle, verify_hashes=False), "mapping", [t["name"] for t in spec["inputs"]],
                 [t["name"] for t in spec["outputs"]])
    assert lines[0] == f"error: BundleError: {want.value}"

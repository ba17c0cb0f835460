"""export/trt.py's build path on stand-ins for TensorRT (tests/trt/fakes.py): what it asks the
builder for, what it writes into the bundle, and that the runtime backend runs the result."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from fakes import FakeTrt
from creps.export.trt import EngineBuildError, build_engines
from creps.export.trt_plan import build_plan
from creps.runtime.backends import BackendUnavailable
from creps.runtime.bundle import read_bundle, write_manifest
from creps.runtime.generate import Runtime


def plan_for(bundle_dir, **kwargs):
    manifest = read_bundle(bundle_dir).manifest
    FakeTrt.model = manifest["model"]
    return build_plan(manifest, "fp32", [(40, 24)], tile=(16, 8), workspace=1 << 28, **kwargs)


def test_engines_and_manifest_entries(fake_gpu, engine_bundle, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    plan = plan_for(engine_bundle)
    entries = build_engines(engine_bundle, plan, timing_cache=cache, version_compatible=True, hardware="ampere_plus")
    bundle = read_bundle(engine_bundle)  # every engine's sha256 checks out
    assert set(bundle.engines) == set(entries) == {"mapping", "lines", "pixels"}
    for stage, entry in bundle.engines.items():
        asked = json.loads(bundle.file(entry).read_text())
        assert asked["network_flags"] == 1 << 0  # STRONGLY_TYPED, nothing else
        assert asked["workspace"] == 1 << 28 and asked["cache"] == "old"  # the saved cache was loaded
        assert asked["flags"] == ["version_compatible"] and asked["hardware"] == "ampere_plus"
        build = next(b for b in plan.stages if b.stage == stage)
        profile = {k: v.to_dict() for k, v in build.profile.items()}
        assert entry["profiles"] == profile
        assert asked["profile"] == {k: v for k, v in profile.items() if k != "psi"}  # static inputs: no profile
        assert entry["tensorrt_version"] == "10.3.0.30" and entry["gpu_name"] == "Fake GPU"
        assert entry["compute_capability"] == "8.7" and entry["strongly_typed"] and entry["graph"] == stage
    assert cache.read_bytes() == b"old+timed"  # saved after the build
    # The engines run, version-compatible ones on request only: the same images as ONNX Runtime.
    size, tile = (40, 24), (16, 8)
    want = Runtime(engine_bundle, backend="ort-cpu", tile=tile).generate([5], size, out="float")
    with pytest.raises(BackendUnavailable, match="version-compatible.*--allow-engine-host-code"):
        Runtime(engine_bundle, backend="tensorrt", tile=tile)
    with Runtime(engine_bundle, backend="tensorrt", tile=tile, allow_engine_host_code=True) as runtime:
        np.testing.assert_array_equal(runtime.generate([5], size, out="float"), want)
    assert fake_gpu.live() == {"device": 0, "pinned": 0, "stream": 0, "event": 0}


def test_same_compute_capability_engines_need_tensorrt_10_9(fake_gpu, engine_bundle, monkeypatch):
    plan = plan_for(engine_bundle)
    with pytest.raises(EngineBuildError, match=r"TensorRT 10\.3\.0\.30 has no same-compute-capability engines "
                                               r"\(10\.9 and later.*ampere_plus"):
        build_engines(engine_bundle, plan, hardware="same_compute_capability")
    assert not read_bundle(engine_bundle).engines
    monkeypatch.setattr(FakeTrt, "__version__", "10.9.0.34")
    monkeypatch.setattr(FakeTrt, "HardwareCompatibilityLevel",
                        SimpleNamespace(AMPERE_PLUS="ampere_plus", SAME_COMPUTE_CAPABILITY="same_compute_capability"))
    entries = build_engines(engine_bundle, plan, hardware="same_compute_capability")
    for entry in entries.values():
        assert json.loads((engine_bundle / entry["file"]).read_text())["hardware"] == "same_compute_capability"
        assert entry["hardware_compatibility"] == "same_compute_capability"


def test_unparsable_graph_is_one_error_and_no_engines(fake_gpu, engine_bundle):
    plan = plan_for(engine_bundle)
    manifest = read_bundle(engine_bundle).manifest
    (engine_bundle / "lines.onnx").write_bytes(b"not onnx")
    manifest["graphs"]["lines"]["sha256"] = __import__("hashlib").sha256(b"not onnx").hexdigest()
    write_manifest(engine_bundle, manifest)
    with pytest.raises(EngineBuildError, match=r"lines.onnx: TensorRT cannot parse it \(not an ONNX file\)"):
        build_engines(engine_bundle, plan)
    assert not read_bundle(engine_bundle).engines

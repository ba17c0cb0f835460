"""export/trt.py's build path on the simulated TensorRT of tests/trt/fakes.py (10.3 and 11.x):
what it asks the builder for, what it writes into the bundle, and that the engines run."""

import hashlib
import importlib

import numpy as np
import pytest
from fakes import read_plan

from creps.errors import CrepsError
from creps.export.trt import EngineBuildError
from creps.export.trt_plan import build_plan
from creps.runtime.backends import BackendUnavailable
from creps.runtime.bundle import read_bundle, write_manifest
from creps.runtime.generate import Runtime

# The creation flag and builder flag values of each release (NvInfer.h, release/10.3 and main = 11.1).
STRONGLY_TYPED = {10: 1, 11: 0}
VERSION_COMPATIBLE = {10: 13, 11: 12}


def plan_for(bundle_dir):
    return build_plan(read_bundle(bundle_dir).manifest, "fp32", [(40, 24)], tile=(16, 8), workspace=1 << 28)


def build(bundle_dir, **kwargs):
    """build_engines of the creps.export.trt now in sys.modules (test_mutations swaps in copies)."""
    return importlib.import_module("creps.export.trt").build_engines(bundle_dir, plan_for(bundle_dir), **kwargs)


def check_build(gpu, bundle_dir, tmp_path):
    """Strongly typed engines with the plan's profiles, workspace, flags and a timing cache
    loaded and saved; their manifest entries; the engines run as ONNX Runtime does."""
    major = int(gpu.tensorrt.__version__.split(".")[0])
    cache = tmp_path / "timing.cache"
    old = gpu.tensorrt.Builder(None).create_builder_config().create_timing_cache(b"")
    old.entries = 7
    cache.write_bytes(old.serialize())
    entries = build(bundle_dir, timing_cache=cache, version_compatible=True, hardware="ampere_plus")
    bundle = read_bundle(bundle_dir)  # every engine's sha256 checks out
    assert set(bundle.engines) == set(entries) == {"mapping", "lines", "pixels"}
    plan = plan_for(bundle_dir)
    for stage, entry in bundle.engines.items():
        asked = read_plan(bundle.file(entry).read_bytes())
        assert asked["network_flags"] == 1 << STRONGLY_TYPED[major]  # strongly typed, nothing else
        assert asked["builder_flags"] == 1 << VERSION_COMPATIBLE[major]  # TF32 (on by default) cleared
        assert asked["hardware"] == "AMPERE_PLUS"
        assert asked["workspace"] == 1 << 28
        profile = {k: v.to_dict() for k, v in next(b for b in plan.stages if b.stage == stage).profile.items()}
        assert entry["profiles"] == profile
        assert asked["profile"] == {k: [v["min"], v["opt"], v["max"]] for k, v in profile.items()
                                    if k != "psi"}  # static inputs: no profile
        assert entry["tensorrt_version"] == gpu.tensorrt.__version__ and entry["gpu_name"] == "Fake GPU"
        assert entry["compute_capability"] == "8.7" and entry["strongly_typed"] and entry["graph"] == stage
    loaded = gpu.tensorrt.Builder(None).create_builder_config().create_timing_cache(cache.read_bytes())
    assert loaded.entries == 7 + 3  # the saved cache was loaded, and saved after the three builds
    with pytest.raises(BackendUnavailable, match="version-compatible.*--allow-engine-host-code"):
        Runtime(bundle_dir, backend="tensorrt", tile=(16, 8))
    want = Runtime(bundle_dir, backend="ort-cpu", tile=(16, 8)).generate([5], (40, 24), out="float")
    with Runtime(bundle_dir, backend="tensorrt", tile=(16, 8), allow_engine_host_code=True) as runtime:
        np.testing.assert_array_equal(runtime.generate([5], (40, 24), out="float"), want)
    assert not any(gpu.live().values())


@pytest.mark.parametrize("fake_gpu", ["10.3.0.30", "11.1.0"], indirect=True)
def test_engines_and_manifest_entries(fake_gpu, engine_bundle, tmp_path):
    check_build(fake_gpu, engine_bundle, tmp_path)


@pytest.mark.parametrize("fake_gpu", ["10.3.0.30"], indirect=True)
def test_same_compute_capability_engines_need_tensorrt_10_9(fake_gpu, engine_bundle):
    with pytest.raises(EngineBuildError, match=r"TensorRT 10\.3\.0\.30 has no same-compute-capability engines "
                                               r"\(10\.9 and later.*ampere_plus"):
        build(engine_bundle, hardware="same_compute_capability")
    assert not read_bundle(engine_bundle).engines


@pytest.mark.parametrize("fake_gpu", ["10.9.0.34", "11.1.0"], indirect=True)
def test_same_compute_capability_engines(fake_gpu, engine_bundle):
    entries = build(engine_bundle, hardware="same_compute_capability")
    for entry in entries.values():
        assert read_plan((engine_bundle / entry["file"]).read_bytes())["hardware"] == "SAME_COMPUTE_CAPABILITY"
        assert entry["hardware_compatibility"] == "same_compute_capability"


def test_unparsable_graph_is_one_error_and_no_engines(fake_gpu, engine_bundle):
    manifest = read_bundle(engine_bundle).manifest
    (engine_bundle / "lines.onnx").write_bytes(b"not onnx")
    manifest["graphs"]["lines"]["sha256"] = hashlib.sha256(b"not onnx").hexdigest()
    write_manifest(engine_bundle, manifest)
    with pytest.raises(EngineBuildError, match=r"lines.onnx: TensorRT cannot parse it \(not an ONNX graph"):
        build(engine_bundle)
    assert not read_bundle(engine_bundle).engines


def check_foreign_timing_cache_refused(gpu, bundle_dir, tmp_path):
    """A timing cache TensorRT refuses (another GPU) is one error, and no engine is built."""
    cache = tmp_path / "timing.cache"
    gpu.name = "Other GPU"
    cache.write_bytes(gpu.tensorrt.Builder(None).create_builder_config().create_timing_cache(b"").serialize())
    gpu.name = "Fake GPU"
    with pytest.raises(CrepsError, match="timing cache"):
        build(bundle_dir, timing_cache=cache)
    assert not read_bundle(bundle_dir).engines


def test_a_timing_cache_from_another_gpu_is_refused(fake_gpu, engine_bundle, tmp_path):
    check_foreign_timing_cache_refused(fake_gpu, engine_bundle, tmp_path)


@pytest.mark.parametrize("call", ["build_serialized_network", "add_optimization_profile"])
def test_tensorrt_refusing_a_build_call_is_one_error(fake_gpu, engine_bundle, call):
    fake_gpu.refuse.add(call)
    with pytest.raises(EngineBuildError, match="TensorRT"):
        build(engine_bundle)
    assert not read_bundle(engine_bundle).engines


def test_an_int8_graph_reaches_tensorrt_with_its_int32_biases_as_float(fake_gpu, tmp_path):
    """ONNX Runtime's QGemm wants a Gemm's bias as int32 through DQ; TensorRT dequantizes only
    activation types and refuses it, so the builder parses the graph with those biases folded."""
    from onnx import TensorProto, helper, numpy_helper

    from creps.calib import qdq

    rng = np.random.default_rng(3)
    weight, bias = rng.standard_normal((8, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="layer")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")])
    model = qdq.with_qdq(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
                         [qdq.Layer("layer", "Gemm", ("x",), "W", 1)], {"x": 3.0}, 7)
    path = tmp_path / "layer.onnx"
    path.write_bytes(model.SerializeToString())
    trt = fake_gpu.tensorrt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    raw = trt.OnnxParser(builder.create_network(0), logger)
    assert not raw.parse_from_file(str(path)) and "only activation types" in raw.get_error(0).desc()
    network, _parser = importlib.import_module("creps.export.trt")._parse(trt, builder, logger, path)
    assert [network.get_input(0).name, network.get_output(0).name] == ["x", "y"]

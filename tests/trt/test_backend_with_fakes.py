"""runtime/trt.py driven end to end on the simulated GPU of tests/trt/fakes.py.

The engines are built by export/trt.py through the simulated TensorRT; their kernels run
the stage graphs with ONNX Runtime on the simulated device memory, only when the stream
or an event is synchronized. So the images equal the ONNX Runtime backend's bit for bit
only if every upload, wait, shape and slot is right. The `check_*` helpers are the
behaviour checks that test_mutations.py shows failing on broken copies of the backend.
"""

import hashlib
import importlib
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from creps.errors import BundleError, CrepsError
from creps.export.trt import build_engines
from creps.export.trt_plan import build_plan
from creps.runtime import trt as trt_backend
from creps.runtime.backends import BackendUnavailable
from creps.runtime.bundle import read_bundle, write_manifest
from creps.runtime.generate import Runtime

NONE_LIVE = {"device": 0, "pinned": 0, "stream": 0, "event": 0, "engine": 0, "context": 0}
SMALL = {"tile": (8, 8), "sizes": [(24, 24)]}


def add_engines(bundle_dir, tile=(8, 8), sizes=((24, 24),), version_compatible=False, **entry_fields):
    """Engines built by creps-export's builder on the simulated GPU; `entry_fields` then
    overwrite their manifest entries (an engine said to come from elsewhere)."""
    plan = build_plan(read_bundle(bundle_dir).manifest, "fp32", list(sizes), 1, None, tile)
    build_engines(bundle_dir, plan, version_compatible=version_compatible)  # the real builder, even in a mutant
    if entry_fields:
        manifest = read_bundle(bundle_dir).manifest
        for entry in manifest["engines"].values():
            entry.update(entry_fields)
        write_manifest(bundle_dir, manifest)


def zero_ws(bundle):
    model = bundle.model
    return np.zeros((1, model["num_ws"], model["w_dim"]), np.float32)


def check_images(bundle_dir, size, tile, seeds=(3, 4), **runtime_args):
    """The TensorRT backend's images equal the ONNX Runtime backend's bit for bit."""
    reference = Runtime(bundle_dir, backend="ort-cpu", tile=tile).generate(list(seeds), size, psi=0.7, out="float")
    with Runtime(bundle_dir, backend="tensorrt", tile=tile, **runtime_args) as runtime:
        assert runtime.backend.name == "tensorrt"
        images = runtime.generate(list(seeds), size, psi=0.7, out="float")
    np.testing.assert_array_equal(images, reference)


def backend_class():
    """TensorRTBackend of the creps.runtime.trt now in sys.modules (test_mutations swaps in copies)."""
    return importlib.import_module("creps.runtime.trt").TensorRTBackend


def check_out_of_profile_refused(gpu, bundle_dir):
    """A tile larger than the pixels profile is one clear error, and nothing is enqueued for it."""
    with backend_class()(read_bundle(bundle_dir)) as backend:
        _, _, (_, B, C, h, R) = backend.engines["pixels"].ranges["cols"]
        ws = zero_ws(read_bundle(bundle_dir))
        cols, rows = np.zeros((1, B, C, h + 1, R), np.float32), np.zeros((1, B, C, 2, R), np.float32)
        copies = len(gpu.copies)
        with pytest.raises(CrepsError, match="outside the engine's profile"):
            backend.run("pixels", {"ws": ws, "cols": cols, "rows": rows})
        assert len(gpu.copies) == copies


def check_failed_enqueue_raises(gpu, bundle_dir, call):
    """TensorRT's False (or None) from `call` is one CrepsError, never garbage handed out."""
    with backend_class()(read_bundle(bundle_dir)) as backend:
        gpu.refuse.add(call)
        try:
            with pytest.raises(CrepsError):
                backend.run("mapping", {"z": np.ones((1, 32), np.float32), "psi": np.ones(1, np.float32)})
        finally:
            gpu.refuse.discard(call)


def check_non_float32_engine_refused(gpu, bundle_dir):
    """An engine whose output is FP16 (a graph with FP16 IO) is refused before anything runs."""
    gpu.io_dtypes = {"img": "HALF"}
    add_engines(bundle_dir, tile=(8, 8), sizes=[(24, 24)])
    gpu.io_dtypes = {}
    with pytest.raises(BackendUnavailable, match="tensor img is not float32"):
        with Runtime(bundle_dir, backend="tensorrt", tile=(8, 8)) as runtime:
            runtime.generate([3], (24, 24))
    assert not any(gpu.live().values())


@pytest.mark.parametrize("size, tile", [((40, 24), (16, 8)), ((17, 29), (7, 5))])
def test_images_equal_onnx_runtime_bit_for_bit(fake_gpu, engine_bundle, size, tile):
    add_engines(engine_bundle, tile, [size])
    with Runtime(engine_bundle, backend="tensorrt", tile=tile) as runtime:
        # The runtime reads the engines' profiles: tiles no larger than the plan's largest tile.
        assert runtime.limits.tile_width[1] <= tile[0] and runtime.limits.tile_height[1] <= tile[1]
        assert runtime.limits.tile_width[0] == runtime.limits.tile_height[0] == 1
    check_images(engine_bundle, size, tile)
    uploads = [n for kind, n in fake_gpu.copies if kind == 1]
    assert uploads and all(n % 4 == 0 for n in uploads)  # byte counts of float32 tensors
    assert fake_gpu.live() == NONE_LIVE  # every buffer, event, context, engine and the stream freed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_images_are_right_whenever_the_gpu_runs_the_queued_work(fake_gpu, engine_bundle, seed):
    """A random legal interleaving: the device runs any prefix of the queued work at any call."""
    add_engines(engine_bundle, (7, 5), [(17, 29)])
    fake_gpu.interleave(seed)
    check_images(engine_bundle, (17, 29), (7, 5), seeds=(5,))


@pytest.mark.parametrize("fake_gpu", ["11.1.0"], indirect=True)
def test_engines_built_and_run_on_tensorrt_11(fake_gpu, engine_bundle):
    add_engines(engine_bundle, (16, 8), [(40, 24)])
    check_images(engine_bundle, (40, 24), (16, 8), seeds=(1,))
    assert fake_gpu.live() == NONE_LIVE


def test_run_stream_hands_out_every_call_in_order(fake_gpu, engine_bundle):
    add_engines(engine_bundle)
    backend = trt_backend.TensorRTBackend(read_bundle(engine_bundle))
    ws = backend.run("mapping", {"z": np.ones((1, 32), np.float32), "psi": np.ones(1, np.float32)})["ws"].copy()
    cols, rows = (backend.run("lines", {"ws": ws, "ys": np.linspace(0, 1, 8, dtype=np.float32),
                                        "xs": np.linspace(0, 1, 8, dtype=np.float32)})[k].copy()
                  for k in ("cols", "rows"))
    calls = [{"ws": ws, "cols": cols[:, :, :, :h], "rows": rows[:, :, :, :w]} for h, w in [(8, 8), (3, 5), (8, 1)]]
    streamed = [out["img"].copy() for out in backend.run_stream("pixels", calls)]
    single = [backend.run("pixels", call)["img"].copy() for call in calls]
    assert [s.shape for s in streamed] == [(1, 3, 8, 8), (1, 3, 3, 5), (1, 3, 8, 1)]
    for a, b in zip(streamed, single):
        np.testing.assert_array_equal(a, b)
    # An abandoned stream leaves work queued; the next calls still get their own outputs.
    next(iter(backend.run_stream("pixels", calls)))
    np.testing.assert_array_equal(backend.run("pixels", calls[1])["img"], single[1])
    backend.close()
    assert fake_gpu.live() == NONE_LIVE


def test_a_tile_outside_the_profile_is_refused(fake_gpu, engine_bundle):
    add_engines(engine_bundle)
    check_out_of_profile_refused(fake_gpu, engine_bundle)


@pytest.mark.parametrize("call", ["execute_async_v3", "set_tensor_address", "set_input_shape"])
def test_tensorrt_refusing_a_call_is_one_error(fake_gpu, engine_bundle, call):
    add_engines(engine_bundle)
    check_failed_enqueue_raises(fake_gpu, engine_bundle, call)
    assert fake_gpu.live() == NONE_LIVE


def test_an_engine_with_fp16_io_is_refused(fake_gpu, engine_bundle):
    check_non_float32_engine_refused(fake_gpu, engine_bundle)


def test_without_a_gpu_the_backend_is_unavailable_and_auto_falls_back(fake_gpu, engine_bundle, caplog):
    add_engines(engine_bundle)
    fake_gpu.present = False
    with pytest.raises(BackendUnavailable, match="no usable CUDA device.*cudaErrorNoDevice"):
        Runtime(engine_bundle, backend="tensorrt")
    with caplog.at_level(logging.WARNING):
        assert Runtime(engine_bundle, backend="auto").backend.name == "ort-cpu"
    assert not any(fake_gpu.live().values())


def test_engine_from_another_tensorrt_is_refused(fake_gpu, engine_bundle):
    add_engines(engine_bundle, tensorrt_version="10.2.0.19")
    with pytest.raises(BackendUnavailable, match=r"built with TensorRT 10\.2\.0\.19.*creps-export --out .* --trt"):
        Runtime(engine_bundle, backend="tensorrt")
    assert fake_gpu.allocations == 0  # refused before anything was made


def test_close_waits_for_the_stream_then_frees_everything_once(fake_gpu, engine_bundle):
    add_engines(engine_bundle)
    with Runtime(engine_bundle, backend="tensorrt") as runtime:
        runtime.generate([1], (24, 24))
        assert fake_gpu.live()["device"] > 0
        fake_gpu.calls.clear()
    assert fake_gpu.live() == NONE_LIVE
    # An abandoned run_stream may leave work queued: the stream is waited for before any free
    # (the simulator raises UndefinedBehaviour for memory freed under queued work).
    assert fake_gpu.calls[:3] == ["cudaStreamSynchronize"] * 3 and fake_gpu.calls.count("cudaStreamSynchronize") == 3
    runtime.close()  # idempotent: no second free (CUDA answers cudaErrorInvalidValue to one)
    with pytest.raises(CrepsError, match="backend is closed"):
        runtime.backend.run("mapping", {"z": np.ones((1, 32), np.float32), "psi": np.ones(1, np.float32)})


def test_a_given_backend_stays_open(fake_gpu, engine_bundle):
    add_engines(engine_bundle)
    with trt_backend.TensorRTBackend(read_bundle(engine_bundle)) as backend:
        with Runtime(engine_bundle, backend=backend) as runtime:
            runtime.generate([1], (24, 24))
        assert fake_gpu.live()["device"] > 0  # the caller's backend, the caller's to close
    assert fake_gpu.live() == NONE_LIVE


# Allocations of one backend with one context per engine: per engine the engine, and per lane its
# context, its stream and per slot a device and a pinned buffer per tensor and an event
# (mapping 3 tensors, lines 5, pixels 4).
def lane_allocations(tensors):
    return 2 + 2 * (2 * tensors + 1)


ALLOCATIONS = sum(1 + lane_allocations(tensors) for tensors in (3, 5, 4))


def test_a_failed_allocation_anywhere_frees_all_made_before_it(fake_gpu, engine_bundle):
    add_engines(engine_bundle)
    bundle = read_bundle(engine_bundle)
    fake_gpu.allocations = 0
    trt_backend.TensorRTBackend(bundle).close()
    assert fake_gpu.allocations == ALLOCATIONS
    for n in range(1, ALLOCATIONS + 1):
        fake_gpu.allocations, fake_gpu.fail_at = 0, n
        with pytest.raises(CrepsError, match="cudaErrorMemoryAllocation|does not deserialize|execution context"):
            trt_backend.TensorRTBackend(bundle)
        assert fake_gpu.live() == NONE_LIVE, f"allocation {n} of {ALLOCATIONS} failed and left {fake_gpu.live()}"


def test_a_later_engine_that_does_not_deserialize_frees_the_earlier_ones(fake_gpu, engine_bundle, caplog):
    add_engines(engine_bundle)
    (engine_bundle / "pixels.engine").write_bytes(b"not an engine")
    manifest = read_bundle(engine_bundle, verify_hashes=False).manifest
    manifest["engines"]["pixels"]["sha256"] = hashlib.sha256(b"not an engine").hexdigest()
    write_manifest(engine_bundle, manifest)
    fake_gpu.allocations = 0
    with pytest.raises(BackendUnavailable, match="pixels.engine does not deserialize here"):
        trt_backend.TensorRTBackend(read_bundle(engine_bundle))
    assert fake_gpu.allocations == 2 + lane_allocations(3) + lane_allocations(5) and fake_gpu.live() == NONE_LIVE  # mapping and lines were made
    with caplog.at_level(logging.WARNING):  # auto falls back on a GPU with nothing left behind
        runtime = Runtime(engine_bundle, backend="auto")
    assert runtime.backend.name == "ort-cpu" and "does not deserialize" in caplog.text
    assert fake_gpu.live() == NONE_LIVE


def test_version_compatible_engines_run_only_on_request(fake_gpu, engine_bundle):
    add_engines(engine_bundle, version_compatible=True)
    with pytest.raises(BackendUnavailable, match=r"mapping.engine is version-compatible.*executable host code.*"
                                                 r"--allow-engine-host-code.*allow_engine_host_code=True"):
        Runtime(engine_bundle, backend="tensorrt")
    assert fake_gpu.allocations == 0  # refused before anything was made
    check_images(engine_bundle, (24, 24), None, seeds=(2,), allow_engine_host_code=True)


def test_without_engine_host_code_allowed_tensorrt_refuses_the_engine(fake_gpu, engine_bundle, monkeypatch):
    """The simulator is as strict as TensorRT: with creps' own refusal bypassed, a version-compatible
    engine still does not deserialize unless engine_host_code_allowed is set."""
    add_engines(engine_bundle, version_compatible=True)
    monkeypatch.setattr(trt_backend, "check_host_code", lambda *args: None)
    with pytest.raises(BackendUnavailable, match="mapping.engine does not deserialize here"):
        trt_backend.TensorRTBackend(read_bundle(engine_bundle))
    assert fake_gpu.live() == NONE_LIVE


def test_an_engine_altered_after_the_bundle_was_read_is_not_deserialized(fake_gpu, engine_bundle, monkeypatch):
    add_engines(engine_bundle, version_compatible=True)
    bundle = read_bundle(engine_bundle)  # hashes checked here...
    with open(engine_bundle / "lines.engine", "ab") as f:  # ...and the file changed after
        f.write(b"\0")
    deserialized = []
    runtime_class = fake_gpu.tensorrt.Runtime
    monkeypatch.setattr(runtime_class, "deserialize_cuda_engine",
                        lambda self, data, real=runtime_class.deserialize_cuda_engine: deserialized.append(
                            len(data)) or real(self, data))
    with pytest.raises(BundleError, match=r"lines.engine \(lines engine\) does not match its sha256"):
        trt_backend.TensorRTBackend(bundle, allow_engine_host_code=True)
    assert len(deserialized) == 1 and fake_gpu.live() == NONE_LIVE  # the mapping engine only


def test_creps_run_opts_in_to_host_code_with_a_flag(fake_gpu, engine_bundle, tmp_path):
    from creps.runtime.cli import cli

    add_engines(engine_bundle, version_compatible=True)
    args = ["--bundle", str(engine_bundle), "--backend", "tensorrt", "--size", "24x24", "--out", str(tmp_path / "a.png")]
    refused = CliRunner().invoke(cli, args)
    assert isinstance(refused.exception, BackendUnavailable) and "--allow-engine-host-code" in str(refused.exception)
    done = CliRunner().invoke(cli, [*args, "--allow-engine-host-code"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "a.png").is_file() and fake_gpu.live() == NONE_LIVE  # creps-run closed its runtime

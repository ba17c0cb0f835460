"""runtime/trt.py driven end to end through stand-ins for TensorRT and cuda-python.

No GPU here, so the backend's own logic (engine checks, buffer sizing from profiles,
pinned/device copies by byte count, shapes per call, slot reuse, run_stream order) runs
against fakes: "device" memory is host memory, copies are memmoves, and an "engine"
evaluates its stage's ONNX graph with ONNX Runtime between the uploads and downloads.
The images must equal the ONNX Runtime backend's bit for bit (fakes: tests/trt/fakes.py).
"""

import hashlib
import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner
from fakes import FakeTrt

from creps.errors import BundleError, CrepsError
from creps.export.trt_plan import build_plan
from creps.runtime import trt as trt_backend
from creps.runtime.backends import BackendUnavailable
from creps.runtime.bundle import file_entry, read_bundle, write_manifest
from creps.runtime.generate import Runtime

NONE_LIVE = {"device": 0, "pinned": 0, "stream": 0, "event": 0}


def add_fake_engines(bundle_dir, tile, sizes, **entry_fields):
    bundle = read_bundle(bundle_dir)
    plan = build_plan(bundle.manifest, "fp32", sizes, 1, None, tile)
    engines = {}
    for build in plan.stages:
        file = f"{build.stage}.engine"
        spec = {"graph": str(bundle.graph_path(build.stage)), "stage": build.stage, "model": bundle.model,
                "profile": {k: v.to_dict() for k, v in build.profile.items()},
                "flags": [FakeTrt.BuilderFlag.VERSION_COMPATIBLE] if entry_fields.get("version_compatible") else []}
        (bundle.path / file).write_text(json.dumps(spec))
        engines[build.stage] = file_entry(bundle.path, file, "fp32", graph=build.graph,
                                          profiles=spec["profile"], **{"tensorrt_version": "10.3.0.30",
                                                                       "gpu_name": "Fake GPU",
                                                                       "compute_capability": "8.7", **entry_fields})
    write_manifest(bundle.path, {**bundle.manifest, "engines": engines})


@pytest.mark.parametrize("size, tile", [((40, 24), (16, 8)), ((17, 29), (7, 5))])
def test_images_equal_onnx_runtime_bit_for_bit(fake_gpu, engine_bundle, size, tile):
    add_fake_engines(engine_bundle, tile, [size])
    reference = Runtime(engine_bundle, backend="ort-cpu", tile=tile).generate([3, 4], size, psi=0.7, out="float")
    runtime = Runtime(engine_bundle, backend="tensorrt", tile=tile)
    assert runtime.backend.name == "tensorrt"
    # The runtime reads the engines' profiles: tiles no larger than the plan's largest tile.
    assert runtime.limits.tile_width[1] <= tile[0] and runtime.limits.tile_height[1] <= tile[1]
    assert runtime.limits.tile_width[0] == runtime.limits.tile_height[0] == 1
    images = runtime.generate([3, 4], size, psi=0.7, out="float")
    np.testing.assert_array_equal(images, reference)
    uploads = [n for kind, n in fake_gpu.copies if kind == 1]
    assert uploads and all(n % 4 == 0 for n in uploads)  # byte counts of float32 tensors
    runtime.close()
    assert fake_gpu.live() == NONE_LIVE  # every device and pinned buffer, event and the stream freed


def test_run_stream_hands_out_every_call_in_order(fake_gpu, engine_bundle):
    add_fake_engines(engine_bundle, (8, 8), [(24, 24)])
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
    with pytest.raises(Exception, match="outside the engine's profile"):
        backend.run("pixels", {"ws": ws, "cols": np.zeros((1, *cols.shape[1:3], 9, cols.shape[4]), np.float32),
                               "rows": rows})


def test_engine_from_another_tensorrt_is_refused(fake_gpu, engine_bundle):
    add_fake_engines(engine_bundle, (8, 8), [(24, 24)], tensorrt_version="10.2.0.19")
    with pytest.raises(BackendUnavailable, match=r"built with TensorRT 10\.2\.0\.19.*creps-export --out .* --trt"):
        Runtime(engine_bundle, backend="tensorrt")


def test_close_waits_for_the_stream_then_frees_everything_once(fake_gpu, engine_bundle):
    add_fake_engines(engine_bundle, (8, 8), [(24, 24)])
    with Runtime(engine_bundle, backend="tensorrt") as runtime:
        runtime.generate([1], (24, 24))
        assert fake_gpu.live()["device"] > 0
        fake_gpu.calls.clear()
    assert fake_gpu.live() == NONE_LIVE
    # An abandoned run_stream may leave copies queued: the stream is waited for before any free.
    assert fake_gpu.calls[0] == "cudaStreamSynchronize" and fake_gpu.calls.count("cudaStreamSynchronize") == 1
    runtime.close()  # idempotent: no second free (the fake answers cudaErrorInvalidValue to one)
    with pytest.raises(CrepsError, match="backend is closed"):
        runtime.backend.run("mapping", {"z": np.ones((1, 32), np.float32), "psi": np.ones(1, np.float32)})


def test_a_given_backend_stays_open(fake_gpu, engine_bundle):
    add_fake_engines(engine_bundle, (8, 8), [(24, 24)])
    with trt_backend.TensorRTBackend(read_bundle(engine_bundle)) as backend:
        with Runtime(engine_bundle, backend=backend) as runtime:
            runtime.generate([1], (24, 24))
        assert fake_gpu.live()["device"] > 0  # the caller's backend, the caller's to close
    assert fake_gpu.live() == NONE_LIVE


def test_a_failed_allocation_anywhere_frees_all_made_before_it(fake_gpu, engine_bundle):
    add_fake_engines(engine_bundle, (8, 8), [(24, 24)])
    bundle = read_bundle(engine_bundle)
    trt_backend.TensorRTBackend(bundle).close()
    total = fake_gpu.allocations
    assert total == 1 + 2 * (3 * 2 + 1) + 2 * (5 * 2 + 1) + 2 * (4 * 2 + 1)  # stream; per slot 2 per tensor + event
    for n in range(1, total + 1):
        fake_gpu.allocations, fake_gpu.fail_at = 0, n
        with pytest.raises(trt_backend.CudaError, match="cudaErrorMemoryAllocation"):
            trt_backend.TensorRTBackend(bundle)
        assert fake_gpu.live() == NONE_LIVE, f"allocation {n} of {total} failed and left memory behind"


def test_a_later_engine_that_does_not_deserialize_frees_the_earlier_ones(fake_gpu, engine_bundle, caplog):
    add_fake_engines(engine_bundle, (8, 8), [(24, 24)])
    (engine_bundle / "pixels.engine").write_bytes(b"not an engine")
    manifest = read_bundle(engine_bundle, verify_hashes=False).manifest
    manifest["engines"]["pixels"]["sha256"] = hashlib.sha256(b"not an engine").hexdigest()
    write_manifest(engine_bundle, manifest)
    with pytest.raises(BackendUnavailable, match="pixels.engine does not deserialize here"):
        trt_backend.TensorRTBackend(read_bundle(engine_bundle))
    assert fake_gpu.allocations == 1 + 14 + 22 and fake_gpu.live() == NONE_LIVE  # mapping and lines were made
    with caplog.at_level(logging.WARNING):  # auto falls back on a GPU with nothing left behind
        runtime = Runtime(engine_bundle, backend="auto")
    assert runtime.backend.name == "ort-cpu" and "does not deserialize" in caplog.text
    assert fake_gpu.live() == NONE_LIVE


def test_version_compatible_engines_run_only_on_request(fake_gpu, engine_bundle):
    add_fake_engines(engine_bundle, (8, 8), [(24, 24)], version_compatible=True)
    with pytest.raises(BackendUnavailable, match=r"mapping.engine is version-compatible.*executable host code.*"
                                                 r"--allow-engine-host-code.*allow_engine_host_code=True"):
        Runtime(engine_bundle, backend="tensorrt")
    assert fake_gpu.allocations == 0  # refused before anything was made
    with Runtime(engine_bundle, backend="tensorrt", allow_engine_host_code=True) as runtime:
        images = runtime.generate([2], (24, 24), out="float")
    np.testing.assert_array_equal(images, Runtime(engine_bundle, backend="ort-cpu").generate([2], (24, 24), out="float"))



def test_without_engine_host_code_allowed_tensorrt_refuses_the_engine(fake_gpu, engine_bundle, monkeypatch):
    """The fake is as strict as TensorRT: with creps' own refusal bypassed, a version-compatible
    engine still does not deserialize unless engine_host_code_allowed is set."""
    add_fake_engines(engine_bundle, (8, 8), [(24, 24)], version_compatible=True)
    monkeypatch.setattr(trt_backend, "check_host_code", lambda *args: None)
    with pytest.raises(BackendUnavailable, match="mapping.engine does not deserialize here"):
        trt_backend.TensorRTBackend(read_bundle(engine_bundle))
    assert fake_gpu.live() == NONE_LIVE


def test_an_engine_altered_after_the_bundle_was_read_is_not_deserialized(fake_gpu, engine_bundle, monkeypatch):
    add_fake_engines(engine_bundle, (8, 8), [(24, 24)], version_compatible=True)
    bundle = read_bundle(engine_bundle)  # hashes checked here...
    spec = json.loads((engine_bundle / "lines.engine").read_text())
    (engine_bundle / "lines.engine").write_text(json.dumps({**spec, "altered": True}))  # ...and the file swapped
    deserialized = []
    monkeypatch.setattr(FakeTrt.Runtime, "deserialize_cuda_engine",
                        lambda self, data, real=FakeTrt.Runtime.deserialize_cuda_engine: deserialized.append(
                            json.loads(data)["stage"]) or real(self, data))
    with pytest.raises(BundleError, match=r"lines.engine \(lines engine\) does not match its sha256"):
        trt_backend.TensorRTBackend(bundle, allow_engine_host_code=True)
    assert deserialized == ["mapping"] and fake_gpu.live() == NONE_LIVE


def test_creps_run_opts_in_to_host_code_with_a_flag(fake_gpu, engine_bundle, tmp_path):
    from creps.runtime.cli import cli

    add_fake_engines(engine_bundle, (8, 8), [(24, 24)], version_compatible=True)
    args = ["--bundle", str(engine_bundle), "--backend", "tensorrt", "--size", "24x24", "--out", str(tmp_path / "a.png")]
    refused = CliRunner().invoke(cli, args)
    assert isinstance(refused.exception, BackendUnavailable) and "--allow-engine-host-code" in str(refused.exception)
    done = CliRunner().invoke(cli, [*args, "--allow-engine-host-code"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "a.png").is_file() and fake_gpu.live() == NONE_LIVE  # creps-run closed its runtime

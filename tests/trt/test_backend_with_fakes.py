"""runtime/trt.py driven end to end through stand-ins for TensorRT and cuda-python.

No GPU here, so the backend's own logic (engine checks, buffer sizing from profiles,
pinned/device copies by byte count, shapes per call, slot reuse, run_stream order) runs
against fakes: "device" memory is host memory, copies are memmoves, and an "engine"
evaluates its stage's ONNX graph with ONNX Runtime between the uploads and downloads.
The images must equal the ONNX Runtime backend's bit for bit (fakes: tests/trt/fakes.py).
"""

import json

import numpy as np
import pytest

from creps.export.trt_plan import build_plan
from creps.runtime import trt as trt_backend
from creps.runtime.backends import BackendUnavailable
from creps.runtime.bundle import file_entry, read_bundle, write_manifest
from creps.runtime.generate import Runtime


def add_fake_engines(bundle_dir, tile, sizes, **entry_fields):
    bundle = read_bundle(bundle_dir)
    plan = build_plan(bundle.manifest, "fp32", sizes, 1, None, tile)
    engines = {}
    for build in plan.stages:
        file = f"{build.stage}.engine"
        spec = {"graph": str(bundle.graph_path(build.stage)), "stage": build.stage, "model": bundle.model,
                "profile": {k: v.to_dict() for k, v in build.profile.items()}}
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
    runtime.backend.close()
    assert not fake_gpu.blocks  # every device and pinned buffer freed


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

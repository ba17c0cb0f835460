"""runtime/trt.py driven end to end through stand-ins for TensorRT and cuda-python.

No GPU here, so the backend's own logic (engine checks, buffer sizing from profiles,
pinned/device copies by byte count, shapes per call, slot reuse, run_stream order) runs
against fakes: "device" memory is host memory, copies are memmoves, and an "engine"
evaluates its stage's ONNX graph with ONNX Runtime between the uploads and downloads.
The images must equal the ONNX Runtime backend's bit for bit. The fakes implement only
the calls docs/tensorrt.md lists, with the documented return conventions.
"""

import ctypes
import enum
import json
import sys
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from creps.export.trt_plan import build_plan, output_shapes
from creps.runtime import trt as trt_backend
from creps.runtime.backends import BackendUnavailable
from creps.runtime.bundle import file_entry, read_bundle, write_manifest
from creps.runtime.generate import Runtime

GPU = SimpleNamespace(name=b"Fake GPU\0\0", major=8, minor=7)


class Err(enum.IntEnum):
    cudaSuccess = 0


class FakeCudart:
    """cuda.bindings.runtime's calls as (error, *values) tuples; memory is numpy-backed."""

    cudaError_t = Err
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self):
        self.blocks, self.copies = {}, []

    def _alloc(self, size):
        block = np.zeros(size, np.uint8)
        self.blocks[block.ctypes.data] = block
        return Err.cudaSuccess, block.ctypes.data

    cudaMalloc = cudaMallocHost = _alloc

    def _free(self, ptr):
        del self.blocks[int(ptr)]
        return (Err.cudaSuccess,)

    cudaFree = cudaFreeHost = _free

    def cudaMemcpyAsync(self, dst, src, size, kind, stream):
        ctypes.memmove(int(dst), int(src), size)
        self.copies.append((kind, size))
        return (Err.cudaSuccess,)

    def cudaGetErrorString(self, err):
        return Err.cudaSuccess, b"fake"

    cudaGetDeviceCount = staticmethod(lambda: (Err.cudaSuccess, 1))
    cudaGetDevice = staticmethod(lambda: (Err.cudaSuccess, 0))
    cudaGetDeviceProperties = staticmethod(lambda device: (Err.cudaSuccess, GPU))
    cudaStreamCreate = cudaEventCreate = staticmethod(lambda: (Err.cudaSuccess, object()))
    cudaStreamDestroy = cudaEventDestroy = cudaEventSynchronize = staticmethod(lambda *a: (Err.cudaSuccess,))
    cudaEventRecord = staticmethod(lambda *a: (Err.cudaSuccess,))


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        low, _, high = self.engine.get_tensor_profile_shape(name, 0) if name in self.engine.profile else [shape] * 3
        if not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if name in self.engine.inputs:
            return self.shapes[name]
        return output_shapes(self.engine.model, self.engine.stage, self.shapes)[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def view(self, name):
        shape = self.get_tensor_shape(name)
        buffer = (ctypes.c_float * int(np.prod(shape))).from_address(self.addresses[name])
        return np.frombuffer(buffer, np.float32).reshape(shape)

    def execute_async_v3(self, stream):
        feeds = {name: self.view(name).copy() for name in self.engine.inputs}
        for name, value in zip(self.engine.outputs, self.engine.session.run(self.engine.outputs, feeds)):
            self.view(name)[...] = value
        return True


class FakeEngine:
    """An 'engine file' is JSON naming the ONNX graph, the stage and the profile."""

    def __init__(self, data: bytes):
        spec = json.loads(data)
        self.stage, self.model, self.profile = spec["stage"], spec["model"], spec["profile"]
        self.session = ort.InferenceSession(spec["graph"], providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.static = {i.name: i.shape for i in self.session.get_inputs() if all(isinstance(d, int) for d in i.shape)}
        self.num_io_tensors = len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i):
        return (self.inputs + self.outputs)[i]

    def get_tensor_mode(self, name):
        return FakeTrt.TensorIOMode.INPUT if name in self.inputs else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return FakeTrt.DataType.FLOAT

    def get_tensor_shape(self, name):
        return self.static.get(name) or [-1]

    def get_tensor_profile_shape(self, name, index):
        shapes = self.profile[name]
        return [shapes["min"], shapes["opt"], shapes["max"]]

    def create_execution_context(self):
        return FakeContext(self)


class FakeTrt:
    __version__ = "10.3.0.30"
    TensorIOMode = SimpleNamespace(INPUT="in", OUTPUT="out")
    DataType = SimpleNamespace(FLOAT="f32")

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return FakeEngine(data)


@pytest.fixture
def fake_gpu(monkeypatch):
    cudart = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt)
    monkeypatch.setattr(trt_backend, "load_cudart", lambda: cudart)
    return cudart


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


@pytest.fixture
def engine_bundle(bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


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

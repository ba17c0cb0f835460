"""The C API (runtime/cpp/include/creps/creps.h) through an FFI (ctypes), against the Python runtime: the
same latents, styles and pixels; statuses and creps_last_error() for every kind of failure, per thread;
no exception crosses it. Needs the build (runtime/cpp/build.sh; CREPS_CPP_BUILD names another folder)."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from creps.grid import Window
from creps.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CREPS_CPP_BUILD") or ROOT / "runtime" / "cpp" / "build")
LIBRARY = BUILD / "libcreps_runtime.so"
pytestmark = pytest.mark.skipif(not LIBRARY.is_file(), reason=f"the C++ runtime is not built ({LIBRARY} is "
                                "missing): run runtime/cpp/build.sh, or set CREPS_CPP_BUILD to its build folder")
BUNDLE = ROOT / "creps" / "data" / "tiny"
# creps_status, as creps.h numbers them
OK, ERROR, BUNDLE_ERROR, BACKEND_UNAVAILABLE, NON_FINITE, INVALID_ARGUMENT = range(6)


class Options(ctypes.Structure):
    _fields_ = [("backend", ctypes.c_char_p), ("threads", ctypes.c_int), ("tile_width", ctypes.c_int),
                ("tile_height", ctypes.c_int), ("max_memory", ctypes.c_int64), ("allow_engine_host_code", ctypes.c_int)]


PROGRESS = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)


class GenerateOptions(ctypes.Structure):
    _fields_ = [("psi", ctypes.c_float), ("has_window", ctypes.c_int), ("window", ctypes.c_double * 4),
                ("fit", ctypes.c_char_p), ("batch", ctypes.c_int), ("progress", PROGRESS),
                ("progress_user", ctypes.c_void_p)]


class ModelInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in ("z_dim", "w_dim", "num_ws", "img_resolution", "img_channels")]


@pytest.fixture(scope="module")
def lib():
    lib = ctypes.CDLL(str(LIBRARY))
    lib.creps_last_error.restype = ctypes.c_char_p
    lib.creps_backend_name.restype = ctypes.c_char_p
    return lib


@pytest.fixture(scope="module")
def runtime(lib):
    handle = ctypes.c_void_p()
    options = Options()
    lib.creps_options_init(ctypes.byref(options))
    options.backend = b"ort-cpu"
    assert lib.creps_open(str(BUNDLE).encode(), ctypes.byref(options), ctypes.byref(handle)) == OK
    yield handle
    lib.creps_close(handle)


@pytest.fixture(scope="module")
def python():
    with Runtime(BUNDLE, backend="ort-cpu") as runtime:
        yield runtime


def floats(n: int):
    return (ctypes.c_float * n)()


def test_model_latents_and_styles(lib, runtime, python):
    info = ModelInfo()
    assert lib.creps_model(runtime, ctypes.byref(info)) == OK
    assert (info.z_dim, info.w_dim, info.num_ws, info.img_resolution) == (32, 32, 9, 32)
    assert lib.creps_backend_name(runtime) == b"ort-cpu"
    seeds = (ctypes.c_int64 * 3)(0, 7, 2**32 - 1)
    z = floats(3 * 32)
    assert lib.creps_z(runtime, seeds, ctypes.c_size_t(3), z) == OK
    want_z = python.z([0, 7, 2**32 - 1])
    assert np.array_equal(np.frombuffer(z, np.float32).reshape(3, 32), want_z)
    ws = floats(3 * 9 * 32)
    assert lib.creps_mapping(runtime, z, ctypes.c_size_t(3), ctypes.c_float(0.7), ws) == OK
    assert np.array_equal(np.frombuffer(ws, np.float32).reshape(3, 9, 32), python.mapping(want_z, 0.7))


def generate(lib, function, runtime, data, n, width, height, options=None):
    rgb, w, h = ctypes.POINTER(ctypes.c_uint8)(), ctypes.c_int(), ctypes.c_int()
    status = function(runtime, data, ctypes.c_size_t(n), width, height, options, ctypes.byref(rgb), ctypes.byref(w),
                      ctypes.byref(h))
    if status != OK:
        return status, None
    pixels = np.ctypeslib.as_array(rgb, (n, h.value, w.value, 3)).copy()
    lib.creps_free(rgb)
    return status, pixels


def test_images_from_seeds_z_and_ws(lib, runtime, python):
    calls = []
    progress = PROGRESS(lambda done, total, user: calls.append((done, total)))
    options = GenerateOptions()
    lib.creps_generate_options_init(ctypes.byref(options))
    options.psi, options.fit, options.batch, options.progress = 0.7, b"stretch", 2, progress
    options.has_window, options.window[:] = 1, [0.1, 0.2, 0.8, 0.9]
    seeds = (ctypes.c_int64 * 3)(4, 5, 6)
    status, got = generate(lib, lib.creps_generate, runtime, seeds, 3, 21, 13, ctypes.byref(options))
    assert status == OK
    want = python.generate([4, 5, 6], (21, 13), 0.7, Window(0.1, 0.2, 0.8, 0.9), "stretch", batch=2)
    assert np.array_equal(got, want)
    assert calls and calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == list(range(1, len(calls) + 1))
    z = np.ascontiguousarray(python.z([9]))
    status, from_z = generate(lib, lib.creps_generate_z, runtime, z.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 1,
                              0, 0)
    assert status == OK and np.array_equal(from_z, python.generate(9))  # 0x0: the training resolution
    ws = np.ascontiguousarray(python.mapping(z, 1.0))
    status, from_ws = generate(lib, lib.creps_generate_ws, runtime, ws.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                               1, 0, 0)
    assert status == OK and np.array_equal(from_ws, from_z)


def test_save_streams_pngs(lib, runtime, python, tmp_path):
    paths = (ctypes.c_char_p * 2)(str(tmp_path / "a.png").encode(), str(tmp_path / "b.png").encode())
    seeds = (ctypes.c_int64 * 2)(1, 2)
    assert lib.creps_save(runtime, paths, seeds, ctypes.c_size_t(2), 17, 9, None) == OK
    want = python.generate([1, 2], (17, 9))
    for name, image in zip("ab", want):
        with Image.open(tmp_path / f"{name}.png") as png:
            assert np.array_equal(np.asarray(png), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_failures_give_a_status_and_one_line_per_thread(lib, runtime, tmp_path):
    handle = ctypes.c_void_p()
    assert lib.creps_open(str(tmp_path / "none").encode(), None, ctypes.byref(handle)) == BUNDLE_ERROR
    assert lib.creps_last_error() == f"{tmp_path / 'none'}: no such bundle folder".encode() and not handle.value
    options = Options()
    lib.creps_options_init(ctypes.byref(options))
    options.backend = b"tensorrt"  # no engines in the tiny bundle (and no TensorRT in this build)
    assert lib.creps_open(str(BUNDLE).encode(), ctypes.byref(options), ctypes.byref(handle)) == BACKEND_UNAVAILABLE
    assert lib.creps_last_error().startswith(b"tensorrt: ")
    seeds = (ctypes.c_int64 * 1)(0)
    status, _ = generate(lib, lib.creps_generate, runtime, seeds, 1, 0, 5)
    assert status == ERROR and lib.creps_last_error() == b"size 0x5: both sides must be at least 1 pixel"
    assert lib.creps_open(None, None, ctypes.byref(handle)) == INVALID_ARGUMENT
    assert lib.creps_z(None, seeds, ctypes.c_size_t(1), floats(32)) == INVALID_ARGUMENT
    seen = []
    thread = threading.Thread(target=lambda: seen.append(lib.creps_last_error()))
    thread.start()
    thread.join()
    assert seen == [b""]  # another thread's last error is its own
    assert lib.creps_last_error().startswith(b"creps_z: ")
    lib.creps_close(None)  # does nothing

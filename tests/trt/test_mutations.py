"""The simulator catches the mistakes that matter: each mutation breaks a copy of the
production module (its source with one edit, loaded as a separate module that replaces it
in sys.modules for the test; the real file is never touched), and the behaviour check that
guards against it, the same helper the behaviour tests call, passes on an unedited copy
and fails on the mutant."""

import importlib
import sys
import types

import numpy as np
import pytest
from test_backend_with_fakes import (add_engines, check_failed_enqueue_raises, check_images,
                                     check_non_float32_engine_refused, check_out_of_profile_refused)
from test_builder_with_fakes import check_build, check_foreign_timing_cache_refused
from test_lanes import check_concurrent_calls, check_lane_given_back_after_an_error

from creps.runtime.bundle import read_bundle

RUNTIME, EXPORT = "creps.runtime.trt", "creps.export.trt"


def images(gpu, bundle, tmp_path):
    check_images(bundle, (17, 29), (7, 5), seeds=(3,))


def images_default_tiles(gpu, bundle, tmp_path):
    """Engines built for 8x8 tiles, the runtime's own (larger) tiles: it must cut to the profile."""
    check_images(bundle, (24, 24), None, seeds=(3,))


def close_after_abandoned_stream(gpu, bundle, tmp_path):
    """A run_stream left with work queued, then close: nothing freed under queued work, all freed."""
    backend = importlib.import_module(RUNTIME).TensorRTBackend(read_bundle(bundle))
    ws = backend.run("mapping", {"z": np.ones((1, 32), np.float32), "psi": np.ones(1, np.float32)})["ws"].copy()
    line = {"ws": ws, "ys": np.zeros(4, np.float32), "xs": np.zeros(4, np.float32)}
    next(iter(backend.run_stream("lines", [line, line, line])))
    backend.close()
    assert not any(gpu.live().values()), gpu.live()


def out_of_profile(gpu, bundle, tmp_path):
    check_out_of_profile_refused(gpu, bundle)


def fp16_engine(gpu, bundle, tmp_path):
    check_non_float32_engine_refused(gpu, bundle)


def unchecked_execute(gpu, bundle, tmp_path):
    check_failed_enqueue_raises(gpu, bundle, "execute_async_v3")


def concurrent_calls(gpu, bundle, tmp_path):
    check_concurrent_calls(gpu, bundle, contexts=2, threads=2)  # one thread per lane: the barrier holds both in flight


def lane_after_error(gpu, bundle, tmp_path):
    check_lane_given_back_after_an_error(gpu, bundle)


def build(gpu, bundle, tmp_path):
    check_build(gpu, bundle, tmp_path)


def foreign_cache(gpu, bundle, tmp_path):
    check_foreign_timing_cache_refused(gpu, bundle, tmp_path)


# name: (module, text in its source, replacement, the check that must catch it, engines to build)
MUTATIONS = {
    "collect does not wait for the slot's event": (
        RUNTIME, "cuda_call(self.cudart, self.cudart.cudaEventSynchronize(slot.event))", "None", images, {}),
    "submit records no event (nothing to wait for)": (
        RUNTIME, "cuda_call(cudart, cudart.cudaEventRecord(slot.event, stream))", "None", images, {}),
    "close frees without waiting for the stream": (
        RUNTIME, "cuda_call(self.cudart, self.cudart.cudaStreamSynchronize(s))", "None",
        close_after_abandoned_stream, {}),
    "a slot reused before its download finished": (
        RUNTIME, """        if i >= slots:
            order.append(("collect", i - slots))
        order.append(("submit", i))""", """        order.append(("submit", i))
        if i >= slots:
            order.append(("collect", i - slots))""", images, {}),
    "tiles outside the profile (shape_range not reported)": (
        RUNTIME, "        return self.engines[stage].shape_range(input)", "        return None",
        images_default_tiles, {"tile": (8, 8), "sizes": [(24, 24)]}),
    "set_input_shape's False not checked (a tile outside the profile runs)": (
        RUNTIME, "if not context.set_input_shape(name, feeds[name].shape):",
        "if not (context.set_input_shape(name, feeds[name].shape) or True):", out_of_profile, {}),
    "no set_input_shape per call": (
        RUNTIME, "if not context.set_input_shape(name, feeds[name].shape):", "if False:", images, {}),
    "pinned buffers of the wrong dtype (float16)": (
        RUNTIME, "ctypes.POINTER(ctypes.c_float)),\n" + " " * 46 + "shape=(sizes[n] // 4,))",
        "ctypes.POINTER(ctypes.c_uint16)),\n" + " " * 46 + "shape=(sizes[n] // 4,)).view(np.float16)", images, {}),
    "an engine's FP16 output read as float32 (dtype check dropped)": (
        RUNTIME, "if self.engine.get_tensor_dtype(name) != trt.DataType.FLOAT:", "if False:", fp16_engine, None),
    "execute_async_v3's False not checked": (
        RUNTIME, "if not context.execute_async_v3(stream):",
        "if not (context.execute_async_v3(stream) or True):", unchecked_execute, {}),
    "two threads share one lane": (
        RUNTIME, "lane = self.free.get()", "lane = self.free.get() and self.lanes[0]", concurrent_calls, {}),
    "a lane not given back after an error": (
        RUNTIME, """        try:
            yield lane
        finally:
            self.free.put(lane)""", """        yield lane
        self.free.put(lane)""", lane_after_error, {}),
    "set_timing_cache's False not checked": (
        EXPORT, "if not config.set_timing_cache(cache, False):",
        "if not (config.set_timing_cache(cache, False) or True):", foreign_cache, None),
    "the network not strongly typed (flag 0, the 11.x value, on 10.3)": (
        EXPORT, "1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)", "1 << 0", build, None),
}


def load_copy(monkeypatch, gpu, name: str, old: str, new: str) -> types.ModuleType:
    """Module `name` from its source with `old` (there exactly once) replaced by `new`, in sys.modules."""
    path = importlib.import_module(name).__file__  # the real module's file (or a copy's, which says the same)
    with open(path) as f:
        source = f.read()
    assert source.count(old) == 1, f"the mutation's text is no longer in {path}: update the mutation"
    module = types.ModuleType(name)
    module.__file__ = path
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(source.replace(old, new), path, "exec"), module.__dict__)
    module.load_cudart = lambda: gpu.cudart  # as the fake_gpu fixture does for the real modules
    return module


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_the_mutation_is_caught(fake_gpu, engine_bundle, tmp_path, monkeypatch, mutation):
    module, old, new, check, engines = MUTATIONS[mutation]
    if engines is not None:
        add_engines(engine_bundle, **engines)
    load_copy(monkeypatch, fake_gpu, module, old, old)
    check(fake_gpu, engine_bundle, tmp_path)  # an unedited copy passes
    load_copy(monkeypatch, fake_gpu, module, old, new)
    fake_gpu.refuse.clear()
    with pytest.raises((Exception, pytest.fail.Exception)):
        check(fake_gpu, engine_bundle, tmp_path)

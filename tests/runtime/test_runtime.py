"""creps.runtime against the PyTorch model, tiled against untiled, and without torch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from creps import grid
from creps.errors import BundleError, CrepsError
from creps.runtime import Runtime
from creps.runtime.backends import Backend, BackendUnavailable, OrtBackend, open_backend
from creps.runtime.bundle import read_bundle
from creps.runtime.tiling import PlanError
from without_packages import TORCH_SIDE, run_without

PSI = 0.7
# (width, height, window, fit): square, odd, non-square both ways, 1xN and Nx1, windows.
CASES = [
    (32, 32, None, "extend"),
    (37, 21, None, "extend"),
    (21, 45, None, "stretch"),
    (1, 50, None, "extend"),
    (50, 1, None, "extend"),
    (40, 24, grid.Window(0.2, -0.3, 0.9, 0.4), "extend"),
    (1, 1, grid.Window(0.5, 0.5, 0.5, 0.5), "extend"),
]


def torch_images(G, seeds, width, height, window=None, fit="extend", psi=PSI) -> np.ndarray:
    import torch

    z = torch.from_numpy(np.concatenate([grid.seed_to_z(s, G.z_dim) for s in seeds]))
    with torch.no_grad():
        return G(z, truncation_psi=psi, width=width, height=height, window=window, fit=fit).numpy()


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return Runtime(tiny_bundle, backend="ort-cpu", tile=(16, 8))


@pytest.mark.parametrize("width,height,window,fit", CASES)
def test_matches_pytorch(runtime, tiny_generator, width, height, window, fit):
    seeds = [3, 11, 4]
    got = runtime.generate(seeds, (width, height), PSI, window, fit, out="float", batch=2)  # batches of 2 and 1
    want = torch_images(tiny_generator, seeds, width, height, window, fit)
    assert got.shape == want.shape == (3, 3, height, width)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_default_size_and_uint8_conversion(runtime, tiny_generator):
    got = runtime.generate(7)  # the training resolution, psi 1
    assert got.shape == (1, 32, 32, 3) and got.dtype == np.uint8
    want = grid.to_uint8(torch_images(tiny_generator, [7], 32, 32, psi=1.0))
    differs = got != want
    assert np.abs(got.astype(int) - want).max() <= 1 and differs.mean() < 1e-3


@pytest.mark.parametrize("width,height", [(70, 45), (1, 33), (129, 1)])
def test_tiled_equals_untiled(tiny_bundle, width, height):
    one_call = OrtBackend(read_bundle(tiny_bundle), concurrent=False)  # threads inside each call
    whole = Runtime(tiny_bundle, backend=one_call, tile=(width, height), line_chunk=width + height)
    assert whole.plan((width, height)).tile == (width, height) and len(whole.plan((width, height)).line_chunks) == 1
    tiled = Runtime(tiny_bundle, backend="ort-cpu", tile=(7, 5), line_chunk=9)
    plan = tiled.plan((width, height))
    assert len(plan.line_chunks) > 1 and len(plan.bands) * len(plan.columns) > 1
    a = whole.generate([1, 2], (width, height), PSI, out="float", batch=2)
    b = tiled.generate([1, 2], (width, height), PSI, out="float", batch=2)
    assert np.abs(a - b).max() <= 1e-5
    ua = whole.generate([1, 2], (width, height), PSI, batch=2)
    ub = tiled.generate([1, 2], (width, height), PSI, batch=2)
    assert np.abs(ua.astype(int) - ub).max() <= 1 and (ua != ub).mean() < 1e-3


def test_small_memory_budget_gives_the_same_image(tiny_bundle, runtime):
    roomy = runtime.generate(5, (60, 40), PSI, out="float")
    tight = Runtime(tiny_bundle, backend="ort-cpu", max_memory=400_000)  # 300 KB of line features, 100 KB of work
    plan = tight.plan((60, 40))
    assert len(plan.bands) * len(plan.columns) > 1 and plan.estimated_bytes <= 400_000
    assert np.abs(tight.generate(5, (60, 40), PSI, out="float") - roomy).max() <= 1e-5


def test_save_streams_the_same_pixels(runtime, tmp_path):
    seeds = [2, 9, 4]
    paths = [tmp_path / f"{s}.png" for s in seeds]
    runtime.save(paths, seeds, (45, 30), PSI, batch=2)
    want = runtime.generate(seeds, (45, 30), PSI)
    for path, image in zip(paths, want):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporaries left


def test_failed_save_leaves_no_file(runtime, tmp_path, monkeypatch):
    def broken(stage, feeds):
        raise RuntimeError("backend died")

    monkeypatch.setattr(runtime.backend, "run", broken)
    with pytest.raises(RuntimeError):
        runtime.save([tmp_path / "a.png"], 1, (20, 20))
    assert list(tmp_path.iterdir()) == []


class RangedBackend(Backend):
    """ONNX Runtime with TensorRT-like profile ranges, recording the shapes it was given."""

    name = "ranged"

    def __init__(self, bundle, ranges):
        self.inner = OrtBackend(bundle)
        self.ranges = ranges
        self.shapes = []

    def run(self, stage, feeds):
        for name, value in feeds.items():
            for dim, (lo, hi) in enumerate(self.ranges.get((stage, name), [])):
                assert lo <= value.shape[dim] <= hi, (stage, name, value.shape)
        self.shapes.append((stage, {k: v.shape for k, v in feeds.items()}))
        return self.inner.run(stage, feeds)

    def shape_range(self, stage, input):
        return self.ranges.get((stage, input))

    def parallel(self, stage):
        return self.inner.parallel(stage)


def test_backend_ranges_are_kept(tiny_bundle, runtime, monkeypatch):
    B, C, R = (runtime.model[k] for k in ("num_blocks", "biline_channels", "rank"))
    ranges = {
        ("mapping", "z"): [(1, 2), (32, 32)],
        ("lines", "ys"): [(4, 16)], ("lines", "xs"): [(4, 24)],
        ("pixels", "cols"): [(1, 2), (B, B), (C, C), (4, 10), (R, R)],
        ("pixels", "rows"): [(1, 2), (B, B), (C, C), (4, 12), (R, R)],
    }
    backend = None

    def ranged(bundle, name, threads, allow_engine_host_code, precision, contexts=1):
        nonlocal backend
        backend = RangedBackend(bundle, ranges)
        return backend

    monkeypatch.setattr("creps.runtime.generate.open_backend", ranged)
    limited = Runtime(tiny_bundle)
    got = limited.generate([1, 2, 3], (50, 30), PSI, out="float", batch=2)
    assert np.abs(got - runtime.generate([1, 2, 3], (50, 30), PSI, out="float")).max() <= 1e-5
    assert any(stage == "pixels" for stage, _ in backend.shapes)
    with pytest.raises(PlanError, match="batch 3"):
        limited.generate([1, 2, 3], (50, 30), batch=3)
    with pytest.raises(PlanError, match="outside the backend's range"):
        limited.generate(1, (50, 3))


class StreamingBackend(Backend):
    """A one-call-at-a-time backend with `run_stream`, counting what went through it."""

    name = "streaming"

    def __init__(self, bundle):
        self.inner = OrtBackend(bundle, concurrent=False)
        self.streamed = {"lines": 0, "pixels": 0}

    def run(self, stage, feeds):
        return self.inner.run(stage, feeds)

    def run_stream(self, stage, calls):
        for feeds in calls:
            self.streamed[stage] += 1
            yield self.inner.run(stage, feeds)

    def shape_range(self, stage, input):
        return None

    def parallel(self, stage):
        return 1


def test_streaming_backend_gets_every_chunk_and_tile(tiny_bundle, runtime):
    backend = StreamingBackend(read_bundle(tiny_bundle))
    streaming = Runtime(tiny_bundle, backend=backend, tile=(16, 8), line_chunk=20)
    plan = streaming.plan((50, 30))
    got = streaming.generate(4, (50, 30), PSI, out="float")
    assert backend.streamed == {"lines": len(plan.line_chunks), "pixels": len(plan.bands) * len(plan.columns)}
    assert np.abs(got - runtime.generate(4, (50, 30), PSI, out="float")).max() <= 1e-5


def test_auto_backend_falls_back_to_cpu(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    backend = open_backend(bundle, "auto")
    assert backend.name in ("ort-cpu", "ort-cuda", "tensorrt")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert backend.name == "ort-cpu"
        with pytest.raises(BackendUnavailable, match="ort-cuda"):
            open_backend(bundle, "ort-cuda")


@pytest.mark.filterwarnings("ignore:Specified provider")  # onnxruntime's own notice of the staged fallback
def test_cuda_provider_that_falls_back_to_cpu_is_refused(tiny_bundle, monkeypatch):
    # onnxruntime-gpu without a usable GPU lists CUDA but runs sessions on the CPU, silently.
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider: the fallback cannot be staged here")
    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: listed)
    bundle = read_bundle(tiny_bundle)
    with pytest.raises(BackendUnavailable, match="ort-cuda: ONNX Runtime cannot use CUDAExecutionProvider"):
        open_backend(bundle, "ort-cuda")
    assert open_backend(bundle, "auto").name == "ort-cpu"


def test_tensorrt_unavailable_is_one_clear_error(tiny_bundle):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="tensorrt"):
            open_backend(read_bundle(tiny_bundle), "tensorrt")
    else:
        pytest.skip("tensorrt is installed here; the TensorRT backend's own tests cover it")


def test_unknown_backend_and_bad_requests(runtime, tiny_bundle):
    with pytest.raises(CrepsError, match="unknown backend"):
        open_backend(read_bundle(tiny_bundle), "vulkan")
    for bad in [dict(size=(0, 5)), dict(size=(3, 2**21)), dict(seeds=[]), dict(seeds=[-1]), dict(seeds=2**32),
                dict(batch=0), dict(psi=float("nan")), dict(fit="crop"), dict(out="jpeg")]:
        with pytest.raises(CrepsError):
            runtime.generate(**{"seeds": 1, "size": (8, 8), **bad})


def test_bundle_problems_are_bundle_errors(tiny_bundle, tmp_path):
    import shutil

    with pytest.raises(BundleError, match="no such bundle"):
        Runtime(tmp_path / "missing")
    altered = tmp_path / "altered"
    shutil.copytree(tiny_bundle, altered)
    with open(altered / "pixels.onnx", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(BundleError, match="sha256"):
        Runtime(altered)


def test_runtime_never_imports_torch(tiny_bundle, runtime, tmp_path):
    """creps-run in a process where the PyTorch side cannot be imported: it never even looks for
    it, and paints what the in-process runtime paints."""
    out = tmp_path / "out"
    done, tried = run_without(TORCH_SIDE, "creps.runtime.cli:main", "--bundle", tiny_bundle, "--backend", "ort-cpu",
                              "--tile", "8x8", "--seeds", "1,2", "--size", "20x12", "--trunc", "0.7", "--batch", "2",
                              "--out", out, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert tried == []
    want = runtime.generate([1, 2], (20, 12), 0.7, batch=2)
    got = np.stack([np.asarray(Image.open(out / f"seed{seed:04d}.png")) for seed in (1, 2)])
    np.testing.assert_array_equal(got, want)

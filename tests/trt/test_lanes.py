"""TensorRTBackend(contexts=N): N lanes per engine run calls from N threads at once, each on its own
context, stream and buffers (tests/trt/fakes.py). A barrier inside every call (before its event is
waited for) holds `contexts` calls in flight together, so two calls sharing a lane would read each
other's pinned buffers; each output is checked against ONNX Runtime for that call's own input."""

import threading

import numpy as np
import pytest
from test_backend_with_fakes import NONE_LIVE, add_engines, backend_class, lane_allocations

from creps.runtime.backends import OrtBackend
from creps.runtime.bundle import read_bundle

TIMEOUT = 30  # seconds; a correct call takes milliseconds, a loaded CI machine may stall threads for seconds


def mapping_feeds(i):
    return {"z": np.random.default_rng(i).standard_normal((1, 32)).astype(np.float32),
            "psi": np.array([0.5 + 0.05 * i], np.float32)}


def in_threads(work, count):
    """Run work(t) on `count` daemon threads (a lost lane blocks forever: never joined past TIMEOUT)."""
    errors = []

    def guarded(t):
        try:
            work(t)
        except BaseException as exc:  # noqa: B902 - reported to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a call never got a lane"
    if errors:
        raise errors[0]


def check_concurrent_calls(gpu, bundle_dir, contexts, threads, calls_each=2):
    """`threads` threads calling run at once get exactly ONNX Runtime's output for their own call."""
    assert (threads * calls_each) % contexts == 0  # every barrier generation fills
    reference = OrtBackend(read_bundle(bundle_dir))
    # With one thread per lane, a barrier proves `contexts` calls in flight at once. With more
    # threads than lanes it is left out: a thread may then wait at it while the simulator's
    # lock is held (seen as an intermittent 30 s stall); those threads only check that a
    # caller blocked on a busy lane gets one and its own output.
    barrier = threading.Barrier(contexts, timeout=TIMEOUT) if threads == contexts else None
    real_sync = gpu.cudart.cudaEventSynchronize

    def sync(event):  # outside the simulator's lock: `contexts` calls submitted before any is waited for
        if barrier is not None:
            barrier.wait()
        return real_sync(event)

    gpu.cudart.cudaEventSynchronize = sync
    with backend_class()(read_bundle(bundle_dir), contexts=contexts) as backend:
        assert all(backend.parallel(stage) == contexts for stage in ("mapping", "lines", "pixels"))

        def work(t):
            for k in range(calls_each):
                feeds = mapping_feeds(t * calls_each + k)
                got = backend.run("mapping", feeds)["ws"]
                np.testing.assert_allclose(got, reference.run("mapping", feeds)["ws"], rtol=0, atol=1e-6)

        try:
            in_threads(work, threads)
        finally:
            gpu.cudart.cudaEventSynchronize = real_sync
    assert gpu.live() == NONE_LIVE


def check_lane_given_back_after_an_error(gpu, bundle_dir, contexts=2):
    """More refused calls than lanes, then a good call: it still gets a lane."""
    with backend_class()(read_bundle(bundle_dir), contexts=contexts) as backend:
        _, _, (_, B, C, h, R) = backend.engines["pixels"].ranges["cols"]
        ws = np.zeros((1,) + backend.engines["pixels"].ranges["ws"][2][1:], np.float32)
        bad = {"ws": ws, "cols": np.zeros((1, B, C, h + 1, R), np.float32), "rows": np.zeros((1, B, C, 2, R),
                                                                                            np.float32)}

        def work(_):
            for _ in range(contexts + 1):
                with pytest.raises(Exception, match="outside the engine's profile"):
                    backend.run("pixels", bad)
            backend.run("mapping", mapping_feeds(0))

        in_threads(work, 1)


@pytest.mark.parametrize("contexts, threads", [(1, 1), (2, 2), (3, 3), (2, 4)])
def test_concurrent_calls_each_get_their_own_output(fake_gpu, engine_bundle, contexts, threads):
    add_engines(engine_bundle)
    check_concurrent_calls(fake_gpu, engine_bundle, contexts, threads)


def test_a_lane_is_given_back_after_an_error(fake_gpu, engine_bundle):
    add_engines(engine_bundle)
    check_lane_given_back_after_an_error(fake_gpu, engine_bundle)
    assert fake_gpu.live() == NONE_LIVE


@pytest.mark.parametrize("contexts", [1, 2, 3])
def test_everything_is_freed_after_close(fake_gpu, engine_bundle, contexts):
    add_engines(engine_bundle)
    fake_gpu.allocations = 0
    backend = backend_class()(read_bundle(engine_bundle), contexts=contexts)
    backend.run("mapping", mapping_feeds(1))
    live = fake_gpu.live()
    assert live["context"] == 3 * contexts and live["stream"] == 3 * contexts
    backend.close()
    assert fake_gpu.live() == NONE_LIVE
    assert fake_gpu.allocations == sum(1 + contexts * lane_allocations(t) for t in (3, 5, 4))


def test_a_failed_allocation_anywhere_with_two_contexts_frees_all(fake_gpu, engine_bundle):
    add_engines(engine_bundle)
    bundle = read_bundle(engine_bundle)
    total = sum(1 + 2 * lane_allocations(t) for t in (3, 5, 4))
    for n in range(1, total + 1):
        fake_gpu.allocations, fake_gpu.fail_at = 0, n
        with pytest.raises(Exception, match="cudaErrorMemoryAllocation|does not deserialize|execution context"):
            backend_class()(bundle, contexts=2)
        assert fake_gpu.live() == NONE_LIVE, f"allocation {n} of {total} failed and left {fake_gpu.live()}"
    fake_gpu.allocations, fake_gpu.fail_at = 0, None
    backend_class()(bundle, contexts=2).close()
    assert fake_gpu.allocations == total


def test_runtime_opens_tensorrt_with_the_contexts_asked_for(fake_gpu, engine_bundle):
    """Runtime(contexts=N) -> open_backend -> TensorRTBackend: N calls at once, and tiles from
    N lanes equal the one-lane runtime's (what creps-serve --workers N relies on)."""
    from creps.runtime.generate import Runtime

    add_engines(engine_bundle)
    images = {}
    for contexts in (1, 3):
        with Runtime(engine_bundle, backend="tensorrt", contexts=contexts) as runtime:
            assert runtime.backend.parallel("pixels") == contexts
            images[contexts] = runtime.generate(seeds=[0], size=(37, 21))
    np.testing.assert_array_equal(images[1], images[3])
    assert fake_gpu.live() == NONE_LIVE

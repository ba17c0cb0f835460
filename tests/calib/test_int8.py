"""INT8 plans on the tiny bundle: TensorRT's rules, the --target-psnr choice, tiled equals untiled in ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from calib_jobs import JOBS
from creps.calib import emulate, int8, qdq
from creps.calib.bundle import activation_form_models
from creps.calib.samples import Job, StageRunner, worst
from creps.calib.sensitivity import MARGIN_DB
from creps.errors import BundleError
from creps.runtime.bundle import read_bundle

PROBE = 48  # above every job side: the probes are the whole images
RANGE_SEEDS = 4


@pytest.fixture(scope="module")
def every_layer(activation_models):
    return int8.calibrate(activation_models, JOBS, probe=PROBE, target_psnr=None, range_seeds=RANGE_SEEDS)


def test_folded_bundle_needs_the_checkpoint(tiny_bundle):
    with pytest.raises(BundleError, match="--network"):
        activation_form_models(read_bundle(tiny_bundle), None)


def test_every_layer_in_int8_by_the_rules(every_layer, activation_models):
    quantized, plan = every_layer
    assert plan["float_layers"] == [] and plan["int8_layers"] == plan["layers"] == len(plan["sensitivity"])
    for stage, model in quantized.items():
        qdq.check(model, stage)
        summary = qdq.summary(model)
        # Constant weights get per-channel scales; style-path layers stay float.
        assert summary["int8_per_channel_weight_layers"] == summary["int8_constant_weight_layers"] > 0
        assert summary["int8_layers"] == len(qdq.layers(activation_models[stage], stage)) < summary["layers"]
    assert qdq.summary(quantized["pixels"])["int8_activation_products"] == 1  # cols @ rows.T
    measured = int8.measure(activation_models, quantized, JOBS)
    assert 20 < measured["worst"]["uint8_psnr_db"] < 80 and measured["worst"]["uint8_max_abs"] > 0


def test_more_latents_are_untruncated_at_the_jobs_sizes():
    """The range and plan latents are new seeds at psi 1 (the tails), or a job's wider psi, at the jobs' sizes in turn."""
    jobs = (Job(0, 0.5, 64, 32), Job(1, 0.7, 17, 9))
    more = int8.more_latents(jobs, 5, 100)
    assert [(j.seed, j.psi, j.width, j.height) for j in more] == [
        (100, 1.0, 64, 32), (101, 1.0, 17, 9), (102, 1.0, 64, 32), (103, 1.0, 17, 9), (104, 1.0, 64, 32)]
    assert {j.psi for j in int8.plan_jobs((Job(0, 1.25, 8, 8), Job(1, 0.7, 8, 8)))} == {1.25}
    ranged = int8.range_jobs(jobs, 3)
    assert ranged[:2] == jobs and {j.seed for j in ranged[2:]} == {int8.RANGE_SEED_BASE + i for i in range(3)}


def test_activation_stats_moments_are_the_inputs_gram_matrices(activation_models):
    """Per weighted input, sum over every row of every feed of x x^T (a tensordot of the layer's
    inputs fetched from ONNX Runtime, contracted over every axis but the channels); without
    moments, the rest is the same."""
    model = activation_models["lines"]
    layers = qdq.layers(model, "lines")
    feeds = int8.calibration_feeds(activation_models, JOBS, 9)["lines"]
    stats = int8.activation_stats(model, layers, feeds)
    weighted = sorted({layer.activations[0] for layer in layers if layer.weight})
    session = emulate.session(emulate.with_outputs(model, weighted))
    fetched = [session.run(weighted, feed) for feed in feeds]
    assert sorted(stats.moments) == weighted
    for i, name in enumerate(weighted):
        xs = [f[i].astype(np.float64) for f in fetched]
        expected = sum(np.tensordot(x, x, [tuple(range(x.ndim - 1))] * 2) for x in xs)
        np.testing.assert_allclose(stats.moments[name], expected, rtol=1e-9, atol=1e-9)
    bare = int8.activation_stats(model, layers, feeds, with_moments=False)
    assert bare.moments == {} and bare.shapes == stats.shapes
    assert all(np.array_equal(bare.values[n], stats.values[n]) for n in stats.values)
    assert all(np.array_equal(bare.channel_amax[n], stats.channel_amax[n]) for n in stats.channel_amax)


def test_the_plan_curve_is_what_the_written_graphs_give(every_layer, activation_models):
    """The sizes are below the probe, so the plan's probe sees every pixel of the jobs: the last
    point of its curve (the switchable graphs, every layer on) is the measured error of the plain
    Q/DQ graphs, worst over the jobs and the plan's other latents on their probes."""
    quantized, plan = every_layer
    more = int8.plan_jobs(JOBS)
    assert len(more) == int8.PLAN_SEEDS and not {j.seed for j in more} & {j.seed for j in JOBS}
    assert plan["plan_jobs"] == [j.to_dict() for j in more]
    on_jobs = int8.measure(activation_models, quantized, JOBS)["worst"]
    on_more = int8.measure(activation_models, quantized, more, probe=int8.PLAN_PROBE)["worst"]
    measured = worst([on_jobs, on_more])
    last = plan["curve"][-1]
    assert last["int8_layers"] == plan["layers"]
    assert last["uint8_psnr_db"] == measured["uint8_psnr_db"]
    assert last["max_abs"] == pytest.approx(measured["max_abs"], rel=1e-4, abs=1e-6)


def test_layers_go_to_int8_in_order_of_error_per_multiply_add(every_layer, activation_models, tiny_bundle):
    """Each layer's work is its multiply-adds on the first job's whole image, counted here from the
    model (a line layer runs on (H + W) x rank rows, a pixel layer on H x W, the rank-R product on
    H x W x channels x rank); the order is by the MSE it adds alone over that work, least first."""
    _, plan = every_layer
    job, model = JOBS[0], read_bundle(tiny_bundle).manifest["model"]
    rank, channels = model["rank"], model["num_blocks"] * model["biline_channels"]
    for row in plan["sensitivity"]:
        stage = row["stage"]
        layer = next(l for l in qdq.layers(activation_models[stage], stage) if l.name == row["layer"])
        if layer.weight is None:  # cols @ rows.T
            want = job.width * job.height * channels * rank
        else:
            dims = qdq.constants(activation_models[stage])[layer.weight].dims
            rows = (job.width + job.height) * rank if stage == "lines" else job.width * job.height
            want = rows * dims[0] * dims[1]
        assert row["macs"] == pytest.approx(want), row
    per_work = [0.0 if row["solo_psnr_db"] is None else 10 ** (-row["solo_psnr_db"] / 10) / row["macs"]
                for row in plan["sensitivity"]]
    assert per_work == sorted(per_work) and len(set(per_work)) > 1
    assert plan["float_work_share"] == 0.0 and plan["weight_bits"] == 7


def test_eight_bit_weights_use_the_whole_int8_range(activation_models):
    quantized, plan = int8.calibrate(activation_models, JOBS, probe=PROBE, target_psnr=None, range_seeds=2,
                                     plan_seeds=0, weight_bits=8)
    assert plan["weight_bits"] == 8
    for stage, model in quantized.items():
        qdq.check(model, stage)
        weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.INT8
                   and len(t.dims) == 2]
        assert weights and all(int(np.abs(w).max()) == 127 for w in weights)  # 7 bits stop at 63


def test_a_target_keeps_the_least_work_float(every_layer, activation_models):
    _, full = every_layer
    psnrs = [c["uint8_psnr_db"] for c in full["curve"]]
    target = (max(psnrs) + min(psnrs)) / 2 - MARGIN_DB  # between all-INT8 and the first layer alone
    quantized, plan = int8.calibrate(activation_models, JOBS, probe=PROBE, target_psnr=target,
                                     range_seeds=RANGE_SEEDS)
    k = plan["int8_layers"]
    assert 0 < k < plan["layers"] and plan["target_uint8_psnr_db"] == target
    ok = [c["int8_layers"] for c in plan["curve"] if c["uint8_psnr_db"] >= target + MARGIN_DB]
    assert k == max(ok)  # the longest prefix that holds the target
    order = [f"{row['stage']}/{row['layer']}" for row in plan["sensitivity"]]
    assert plan["float_layers"] == order[k:]
    work = [row["macs"] for row in plan["sensitivity"]]
    assert plan["float_work_share"] == pytest.approx(sum(work[k:]) / sum(work)) and 0 < plan["float_work_share"] < 1
    assert sum(qdq.summary(m)["int8_layers"] for m in quantized.values()) == k
    measured = int8.measure(activation_models, quantized, JOBS)["worst"]
    assert measured["uint8_psnr_db"] >= target + MARGIN_DB


def test_only_the_stages_given_get_int8_layers(activation_models):
    quantized, plan = int8.calibrate(activation_models, JOBS, probe=PROBE, target_psnr=None, range_seeds=2,
                                     plan_seeds=0, stages=("lines",))
    pixel_layers = [f"pixels/{layer.name}" for layer in qdq.layers(activation_models["pixels"], "pixels")]
    assert plan["int8_stages"] == ["lines"] and qdq.summary(quantized["pixels"])["int8_layers"] == 0
    assert sorted(plan["float_layers"]) == sorted(pixel_layers)
    assert plan["int8_layers"] == qdq.summary(quantized["lines"])["int8_layers"] == plan["layers"] - len(pixel_layers)
    assert all(c["added"].startswith("lines/") for c in plan["curve"])
    assert {row["stage"] for row in plan["sensitivity"]} == {"lines", "pixels"}  # every layer measured


def session(model):
    options = ort.SessionOptions()  # as the runtime's: every graph optimisation (integer kernels)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_int8_tiled_equals_int8_untiled(every_layer, activation_models):
    quantized, _ = every_layer
    job = JOBS[1]  # 37x13, extends past [0, 1]
    ws = StageRunner(activation_models).ws(job)
    ys, xs = job.coords()
    lines, pixels = session(quantized["lines"]), session(quantized["pixels"])
    cols, rows = lines.run(["cols", "rows"], {"ws": ws, "ys": ys, "xs": xs})
    chunks = [lines.run(["cols", "rows"], {"ws": ws, "ys": ys[a:a + 5], "xs": xs[b:b + 9]})
              for a, b in zip(range(0, len(ys), 5), range(0, len(xs), 9))]
    np.testing.assert_allclose(np.concatenate([c for c, _ in chunks], axis=3), cols, rtol=0, atol=1e-5)
    whole = pixels.run(["img"], {"ws": ws, "cols": cols, "rows": rows})[0]  # (1, 3, 13, 37)
    tiled = np.zeros_like(whole)
    for y in range(0, 13, 6):
        for x in range(0, 37, 10):
            tiled[:, :, y:y + 6, x:x + 10] = pixels.run(["img"], {"ws": ws, "cols": cols[:, :, :, y:y + 6],
                                                                  "rows": rows[:, :, :, x:x + 10]})[0]
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)

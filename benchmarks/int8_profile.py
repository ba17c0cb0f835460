"""Where the INT8 stage graphs spend their time on this CPU, against FP32: ONNX Runtime's profiler, per op type.

The published 256 configuration (random weights, as benchmarks/int8.py makes it) is exported;
its FP32 line and pixel graphs and Q/DQ graphs with every layer in INT8 (min-max ranges from
the calibration jobs' probes, weights as wide as this CPU runs exactly: the time does not
depend on the values) run one call of the runtime's size at a time (a line chunk of
DEFAULT_LINES lines, a DEFAULT_TILE pixel tile) on one thread, as calib/speed.py times them.
Each op type's share of the kernel time says what INT8 speeds up (the integer MatMuls) and
what it adds: the quantize passes, and the float element-wise passes (modulation, bias,
LeakyRelu, clamp) that FP32's fused Gemms absorb or that the INT8 graphs' activation form
needs. Run on a quiet machine.
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from common import benchmark  # noqa: E402
from tiny_models import random_generator  # noqa: E402

from creps.calib import int8, qdq, sensitivity, speed  # noqa: E402
from creps.calib.bundle import activation_form_models, load_models  # noqa: E402
from creps.calib.samples import DEFAULT_JOBS  # noqa: E402
from creps.cli import entry_point  # noqa: E402
from creps.export import export_bundle  # noqa: E402
from creps.model import GeneratorConfig  # noqa: E402
from creps.runtime import read_bundle  # noqa: E402
from creps.runtime.backends import session_options  # noqa: E402
from creps.runtime.cpu import exact_weight_bits  # noqa: E402
from creps.runtime.tiling import DEFAULT_LINES, DEFAULT_TILE  # noqa: E402

CALLS = 8  # profiled calls per graph, after one to warm up


def op_times(graph, feeds: dict, folder: Path, label: str) -> dict[str, float]:
    """Milliseconds per call of each op type's kernels, from ONNX Runtime's profile of CALLS
    calls after a first one (arenas and kernels warm) that the profile counts out."""
    import onnxruntime as ort

    options = session_options(ort, 1)
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / label)
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(CALLS + 1):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"),
                  key=lambda e: e["ts"])
    if len(runs) != CALLS + 1:
        raise RuntimeError(f"the profile of {label} has {len(runs)} runs, not {CALLS + 1}")
    warm = runs[0]["ts"] + runs[0]["dur"]
    totals: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= warm:
            totals[event["args"]["op_name"]] += event["dur"] / 1000 / CALLS
    return dict(totals.most_common())


@benchmark("int8_profile", __doc__, takes="about 3 min on 2 cores")
@click.option("--top", type=int, default=8, show_default=True, help="Op types printed per graph.")
def main(top: int) -> dict:
    G = random_generator(GeneratorConfig(), seed=0, output_std=0.5)
    bits = exact_weight_bits()
    report = {"weight_bits": bits, "calls": CALLS, "lines_per_call": DEFAULT_LINES,
              "tile": list(DEFAULT_TILE), "threads": 1, "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = read_bundle(export_bundle(G, Path(tmp) / "bundle", verify=False, progress=True))
        exported, activation = load_models(bundle), activation_form_models(bundle, G)
        feeds = int8.calibration_feeds(activation, DEFAULT_JOBS, int8.CALIBRATION_PROBE)
        layers, stats = sensitivity.stage_layers_and_stats(activation, feeds, with_moments=False)
        calls = speed.runtime_feeds(exported, DEFAULT_JOBS[0])
        for stage in int8.INT8_STAGES:
            ranges = int8.ranges(stats[stage], layers[stage], {layer.name: "minmax" for layer in layers[stage]})
            graphs = {"fp32": exported[stage], "int8": qdq.with_qdq(activation[stage], layers[stage], ranges, bits)}
            found = {}
            for precision, graph in graphs.items():
                times = op_times(graph, calls[stage], Path(tmp), f"{stage}-{precision}")
                total = sum(times.values())
                found[precision] = {"ms_per_call": total, "ops_ms": times}
                click.echo(f"{stage:6s} {precision}: {total:7.1f} ms per call; " + ", ".join(
                    f"{op} {ms:.1f} ({100 * ms / total:.0f}%)" for op, ms in list(times.items())[:top]))
            found["speedup"] = found["fp32"]["ms_per_call"] / found["int8"]["ms_per_call"]
            click.echo(f"{stage:6s} every layer INT8: x{found['speedup']:.2f}")
            report["stages"][stage] = found
    return report


if __name__ == "__main__":
    entry_point(main)()

"""Issue 4's figures: exporting the published 256 config into a bundle.

- export time (graphs, then parity at six sizes x two batches), bar < 2 minutes;
- bundle size against the checkpoint size;
- max abs error ONNX Runtime vs PyTorch per verification case (bar 1e-4);
- the graph cleanup kept and what it removed (nodes by op type, initializers, bytes);
- ONNX Runtime CPU time of the two modulated-layer forms per stage, called as creps-run
  calls them (one thread, one default line chunk or pixel tile), for
  creps.export.writer.MODULATION.

The generator is GeneratorConfig() (~30.5 M parameters) with random weights, image layers
scaled to std 0.5 like a trained model (tests/tiny_models.random_generator). CPU only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import onnxruntime as ort
import torch

from creps import grid
from creps.calib.speed import best_seconds
from creps.checkpoint import save_checkpoint
from creps.cli import entry_point
from creps.export import export_bundle, graphs, stages, verify, writer
from creps.model import GeneratorConfig
from creps.runtime.tiling import DEFAULT_LINES, DEFAULT_TILE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from common import benchmark  # noqa: E402
from tiny_models import random_generator  # noqa: E402


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def cleanup_effect(G, bundle: Path, work: Path) -> dict:
    """Each stage exported without cleanup, against the bundle's cleaned graph."""
    import onnx

    effect = {}
    for stage in ("mapping", "lines", "pixels"):
        raw_path = work / f"{stage}.raw.onnx"
        raw = graphs.export_stage(G, stage, raw_path, 18, modulation=writer.MODULATION[stage] or "activation",
                                  cleanup=False)
        clean = onnx.load(str(bundle / f"{stage}.onnx"))
        raw_ops, clean_ops = Counter(n.op_type for n in raw.graph.node), Counter(n.op_type for n in clean.graph.node)
        effect[stage] = {
            "nodes": [sum(raw_ops.values()), sum(clean_ops.values())],
            "removed_ops": dict(raw_ops - clean_ops), "added_ops": dict(clean_ops - raw_ops),
            "initializers": [len(raw.graph.initializer), len(clean.graph.initializer)],
            "file_bytes": [raw_path.stat().st_size, (bundle / f"{stage}.onnx").stat().st_size],
            "axes_kept": graphs.io_signature(raw) == graphs.io_signature(clean),
        }
    return effect


def modulation_timings(G, bundle: Path, work: Path) -> dict:
    """ORT CPU seconds (best of 5: calib.speed.best_seconds) per stage and form, as creps-run calls the graphs on
    the CPU: one thread per call, one default line chunk (DEFAULT_LINES lines, half ys and
    half xs) and one default pixel tile (DEFAULT_TILE) of a 512x512 image, batch 1."""
    z = grid.seed_to_z(0, G.cfg.z_dim)
    ys, xs = grid.coords(512, 512)
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(z)).numpy()
        cols, rows = (t.numpy() for t in G.synthesis.lines(torch.from_numpy(ws), torch.from_numpy(ys),
                                                           torch.from_numpy(xs)))
    half, (tile_w, tile_h) = DEFAULT_LINES // 2, DEFAULT_TILE
    cases = {"lines": {f"lines chunk {half}+{half}": {"ws": ws, "ys": ys[:half], "xs": xs[:half]}},
             "pixels": {f"pixels tile {tile_w}x{tile_h}": {"ws": ws, "cols": cols[:, :, :, :tile_h],
                                                           "rows": rows[:, :, :, :tile_w]}}}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    timings = {}
    for stage, feeds_by_case in cases.items():
        for form in stages.MODULATION_FORMS:
            path = bundle / f"{stage}.onnx"
            if form != writer.MODULATION[stage]:
                path = work / f"{stage}.{form}.onnx"
                graphs.export_stage(G, stage, path, 18, modulation=form)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for case, feeds in feeds_by_case.items():
                timings.setdefault(case, {})[form] = round(best_seconds(session, feeds), 4)
                print(f"  {case:22s} {form:10s} {timings[case][form]:.4f} s", flush=True)
    return timings


@benchmark("export", __doc__, takes="about 5 min on 2 cores")
def main() -> dict:
    cfg = GeneratorConfig()
    G = random_generator(cfg, seed=0)
    params = sum(p.numel() for p in G.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = work / "network.safetensors"
        save_checkpoint(checkpoint, G, cfg)
        out = work / "bundle"
        start = time.perf_counter()
        export_bundle(G, out, source=checkpoint, verify=False, progress=True)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        record = verify.verify_bundle(G, out, progress=True)
        verify_s = time.perf_counter() - start
        print(f"export {export_s:.1f} s + parity {verify_s:.1f} s; max abs error {record['max_abs_error']:.2e}",
              flush=True)
        sizes = {"checkpoint_bytes": checkpoint.stat().st_size, "bundle_bytes": folder_bytes(out),
                 "graph_bytes": {p.name: p.stat().st_size for p in sorted(out.glob("*.onnx"))}}
        print(f"checkpoint {sizes['checkpoint_bytes'] / 1e6:.1f} MB, bundle {sizes['bundle_bytes'] / 1e6:.1f} MB",
              flush=True)
        print("modulated-layer forms (ORT CPU, one thread per call, batch 1):", flush=True)
        timings = modulation_timings(G, out, work)
        effect = cleanup_effect(G, out, work)
        for stage, e in effect.items():
            print(f"cleanup {stage}: nodes {e['nodes'][0]} -> {e['nodes'][1]}, removed {e['removed_ops']}", flush=True)
    return {
        "versions": writer.exporter_section() | {"onnxruntime": ort.__version__},
        "model": {"config": "GeneratorConfig() (published 256)", "parameters": params,
                  "weights": "random, image layers scaled to std 0.5"},
        "export_seconds": round(export_s, 1), "parity_seconds": round(verify_s, 1),
        "total_seconds": round(export_s + verify_s, 1), "bar_seconds": 120,
        **sizes,
        "parity": {"tolerance": record["tolerance"], "max_abs_error": record["max_abs_error"],
                   "cases": [{k: c[k] for k in ("case", "width", "height", "batch", "max_abs_error")}
                             for c in record["cases"]]},
        "cleanup": {"kept": graphs.CLEANUP, "per_stage": effect},
        "modulation": {"chosen": writer.MODULATION, "ort_cpu_seconds_one_thread_batch1": timings},
    }


if __name__ == "__main__":
    entry_point(main)()

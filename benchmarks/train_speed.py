"""Issue 3's figures: creps-train speed on this CPU, and the share of the lazy regularisers.

For each config, a Trainer on a few random images runs every phase of a step (G main,
G path-length reg, D main, D R1 reg) `steps` times after one untimed warm-up step, and
times each phase. One amortised step costs Gmain + Dmain + Greg/4 + Dreg/16 (the lazy
intervals), so images/s = batch / that, and the R1 / path-length shares are
(Dreg/16) / step and (Greg/4) / step.

Configs, at batch 4:
- the bundled default model's (64x64, --cbase 512 --cmax 32 --z-dim 64 --map-depth 2);
- the published 256 config (GeneratorConfig() defaults: G channel_base 65536 / max 1024,
  z = w = 512, 8 mapping layers), with the original's default D (--cbase 32768 --cmax 512).

CPU only, fp32; the record's figures are one thread's: OMP_NUM_THREADS=1 python
benchmarks/train_speed.py.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import benchmark

from creps.cli import entry_point
from creps.train.distributed import Processes
from creps.train.loop import D_REG_INTERVAL, G_REG_INTERVAL, Trainer, TrainOptions

BATCH = 4
CONFIGS = {  # name -> (TrainOptions overrides, timed steps)
    "default model (64x64, G 1024/64, D 512/32, z 64, map 2)":
        (dict(resolution=64, cbase=512, cmax=32, z_dim=64, map_depth=2), 3),
    "published 256 (GeneratorConfig() defaults; D 32768/512)":
        (dict(resolution=256, cbase=32768, cmax=512, z_dim=512, map_depth=8), 1),
}
PHASES = {"Gmain": ("g_main", 1), "Greg": ("g_reg", G_REG_INTERVAL), "Dmain": ("d_main", 1),
          "Dreg": ("d_reg", D_REG_INTERVAL)}


def measure(workdir: Path, overrides: dict, steps: int) -> dict:
    data = workdir / "images"
    data.mkdir(exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(8):
        Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(data / f"{i}.png")
    opts = TrainOptions(data=str(data), outdir=str(workdir / "run"), batch=BATCH, gamma=1.0, aug="noaug",
                        cache_dir=str(workdir / "cache"), **overrides)
    trainer = Trainer(opts, Processes(rank=0, world=1, device=torch.device("cpu")))
    trainer.real_idx = torch.arange(BATCH) % len(trainer.images)
    seconds = {name: [] for name in PHASES}
    for repeat in range(steps + 1):
        for name, (method, _) in PHASES.items():
            started = time.perf_counter()
            getattr(trainer, method)()
            if repeat:  # the first round warms up
                seconds[name].append(time.perf_counter() - started)
    phase = {name: float(np.mean(values)) for name, values in seconds.items()}
    step = sum(phase[name] / interval for name, (_, interval) in PHASES.items())
    return {
        "phase_seconds": phase,
        "amortised_step_seconds": step,
        "images_per_second": BATCH / step,
        "r1_share": phase["Dreg"] / D_REG_INTERVAL / step,
        "path_length_share": phase["Greg"] / G_REG_INTERVAL / step,
        "timed_steps": steps,
        "G_parameters": sum(p.numel() for p in trainer.G.parameters()),
        "D_parameters": sum(p.numel() for p in trainer.D.parameters()),
    }


@benchmark("train_speed", __doc__, takes="about 3 min on one core")
def main() -> dict:
    results = {"batch": BATCH, "threads": torch.get_num_threads(), "torch": torch.__version__, "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (overrides, steps) in CONFIGS.items():
            workdir = Path(tmp) / str(len(results["configs"]))
            workdir.mkdir()
            print(f"{name}: timing {steps} step(s) of batch {BATCH} ...", flush=True)
            row = measure(workdir, overrides, steps)
            results["configs"][name] = row
            print(f"  {row['images_per_second']:.3f} img/s; phases (s): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in row["phase_seconds"].items())
                  + f"; R1 share {row['r1_share']:.1%}, path-length share {row['path_length_share']:.1%}")
    return results


if __name__ == "__main__":
    entry_point(main)()

"""A finished run's record: its G_ema as a plain generator checkpoint, a loss-curve plot and a
sample grid (how the bundled default model in creps/data/default was made).

  python -m creps.train.record --snapshot runs/x/network-snapshot-000012000.safetensors \\
      --out creps/data/default/network.safetensors --plot docs/loss.png --grid docs/samples.png \\
      --note command="creps-train ..." --note duration_minutes=95
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np
import torch

from creps import grid
from creps.checkpoint import load_generator, save_checkpoint
from creps.cli import entry_point
from creps.files import atomic_path
from creps.images import save_image
from creps.train.snapshot import read_snapshot

log = logging.getLogger(__name__)

CURVES = [  # (panel, stats key, label)
    (0, "Loss/G/loss", "G loss"), (0, "Loss/D/loss", "D loss"),
    (1, "Loss/scores/real", "D(real)"), (1, "Loss/scores/fake", "D(fake)"),
    (2, "Loss/r1_penalty", "R1 penalty"), (2, "Loss/pl_penalty", "path-length penalty"),
    (2, "Augment/p", "ADA p"),
]


def read_stats(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_stats(stats: list[dict], png: Path) -> None:
    """Loss curves against kimg, three panels, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), dpi=80)
    for panel, key, label in CURVES:
        points = [(s["kimg"], s[key]) for s in stats if key in s]
        if points:
            kimg, value = zip(*points)
            axes[panel].plot(kimg, value, label=label, linewidth=1)
    for ax in axes:
        ax.set_xlabel("kimg")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("symlog", linthresh=1e-3)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def tile_grid(tiles: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, R, R, 3) uint8 -> one (rows*R, cols*R, 3) image, row by row."""
    R = tiles.shape[1]
    return np.ascontiguousarray(tiles.reshape(rows, cols, R, R, 3).transpose(0, 2, 1, 3, 4).reshape(rows * R, cols * R, 3))


def sample_grid(G, rows: int = 4, cols: int = 8, device: torch.device | None = None) -> np.ndarray:
    """Seeds 0 .. rows*cols-1 at the training resolution, one row of seeds per forward pass."""
    z = np.concatenate([grid.seed_to_z(s, G.z_dim) for s in range(rows * cols)])  # (n, z_dim)
    with torch.no_grad():
        imgs = [G(torch.from_numpy(chunk).to(device)).cpu().numpy() for chunk in np.split(z, rows)]
    return tile_grid(grid.to_uint8(np.concatenate(imgs)), rows, cols)


@click.command()
@click.option("--snapshot", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The G_ema-only checkpoint to write.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Loss-curve PNG (from stats.jsonl).")
@click.option("--grid", "grid_png", type=click.Path(dir_okay=False, path_type=Path), help="Sample grid PNG.")
@click.option("--note", multiple=True, help="key=value to add to the record (repeatable).")
def cli(snapshot, out, plot, grid_png, note):
    """Write a run's G_ema as a plain checkpoint, with its record, a loss plot and a sample grid."""
    _, train_meta, _ = read_snapshot(snapshot)
    G = load_generator(snapshot)  # G_ema
    record = {"snapshot": snapshot.name, "kimg": train_meta["cur_nimg"] / 1000, "steps": train_meta["batch_idx"],
              "ada_p": (train_meta.get("ada") or {}).get("p"), "options": train_meta["options"]}
    record.update(dict(item.split("=", 1) for item in note))
    save_checkpoint(out, G, G.cfg, metadata={"creps.record": json.dumps(record)})
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    if plot:
        plot_stats(read_stats(snapshot.parent / "stats.jsonl"), plot)
    if grid_png:
        save_image(sample_grid(G), grid_png)


main = entry_point(cli)

if __name__ == "__main__":
    main()

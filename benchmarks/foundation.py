"""Issue 2's figures: model vs float64 reference, tiled vs whole, time to import an original pickle.

- max abs difference of our float32 model against tests/reference_creps.py (a plain float64
  implementation written from docs/model.md) at several sizes, for a tiny, a mid-size and
  the published config (random weights, image layers scaled to std 0.5 like a trained model);
- tiled vs whole: `lines` on chunks of ys/xs and `pixels` on tiles vs one whole pass;
- time for `creps.load_generator` to import an original-format pickle of the published 256
  config (GeneratorConfig() defaults, ~30.5 M parameters), written by tests/original_format.py.

CPU only.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import original_format  # noqa: E402
import reference_creps  # noqa: E402
from common import benchmark  # noqa: E402
from tiny_models import MID, TINY, random_generator  # noqa: E402

from creps import grid, load_generator  # noqa: E402
from creps.cli import entry_point  # noqa: E402
from creps.model import GeneratorConfig  # noqa: E402

PARITY = {  # config name -> (config, sizes W x H)
    "tiny (res 16, 32 ch)": (TINY, [(16, 16), (37, 11), (11, 37), (1, 29), (29, 1)]),
    "mid (res 64, 256 ch)": (MID, [(64, 64), (96, 40), (33, 71), (1, 64)]),
    "published (res 256, 1024 ch)": (GeneratorConfig(), [(48, 20), (17, 33)]),
}
TILED = (MID, 97, 61, 16)  # config, width, height, tile/chunk size
LOAD_REPEATS = 3


def parity(cfg, sizes, psi=0.7):
    G = random_generator(cfg, seed=1)
    state = G.state_dict()
    z = torch.from_numpy(grid.seed_to_z(0, cfg.z_dim))
    rows = []
    for width, height in sizes:
        with torch.no_grad():
            img = G(z, truncation_psi=psi, height=height, width=width)
        ys, xs = grid.coords(width, height)
        ref = reference_creps.generate(state, cfg.to_dict(), z, psi, None, ys, xs)
        rows.append(dict(size=f"{width}x{height}", max_abs_diff=(img.double() - ref).abs().max().item(),
                         output_std=ref.std().item(), max_abs_ref=ref.abs().max().item()))
        print(f"  {width}x{height}: max abs diff {rows[-1]['max_abs_diff']:.3g} (output std {rows[-1]['output_std']:.3f})")
    return rows


@torch.no_grad()
def tiled_vs_whole(cfg, width, height, tile):
    G = random_generator(cfg, seed=2)
    ws = G.mapping(torch.from_numpy(grid.seed_to_z(1, cfg.z_dim)), truncation_psi=0.7)
    ys, xs = (torch.from_numpy(v) for v in grid.coords(width, height))
    cols, rows = G.synthesis.lines(ws, ys, xs)
    whole = G.synthesis.pixels(ws, cols, rows)
    lines_diff = 0.0
    tiled = torch.empty_like(whole)
    for y0 in range(0, height, tile):
        c, _ = G.synthesis.lines(ws, ys[y0:y0 + tile], xs[:1])
        lines_diff = max(lines_diff, (c - cols[:, :, :, y0:y0 + tile]).abs().max().item())
        for x0 in range(0, width, tile):
            _, r = G.synthesis.lines(ws, ys[:1], xs[x0:x0 + tile])
            lines_diff = max(lines_diff, (r - rows[:, :, :, x0:x0 + tile]).abs().max().item())
            tiled[:, :, y0:y0 + tile, x0:x0 + tile] = G.synthesis.pixels(ws, c, r)
    return dict(config="mid (res 64, 256 ch)", size=f"{width}x{height}", tile=tile,
                lines_max_abs_diff=lines_diff, image_max_abs_diff=(tiled - whole).abs().max().item())


@torch.no_grad()
def pickle_load_time():
    cfg = GeneratorConfig()
    G = random_generator(cfg, seed=3)
    params = sum(p.numel() for p in G.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "creps-published-256.pkl"
        start = time.perf_counter()
        original_format.write_pickle(path, original_format.snapshot(G))
        write_s = time.perf_counter() - start
        times = []
        for _ in range(LOAD_REPEATS):
            start = time.perf_counter()
            loaded = load_generator(path)
            times.append(time.perf_counter() - start)
        size_mb = path.stat().st_size / 1e6
    z = torch.from_numpy(grid.seed_to_z(0, cfg.z_dim))
    same = torch.equal(loaded(z, height=32, width=48), G(z, height=32, width=48))
    return dict(config="published GeneratorConfig() (res 256)", parameters=params, pickle_mb=round(size_mb, 1),
                pickle_holds="G, D, G_ema, augment_pipe, training_set_kwargs (G and G_ema full size)",
                write_s=round(write_s, 2), load_s=[round(t, 3) for t in times],
                load_s_median=round(statistics.median(times), 3), bar_s=10.0, images_identical=same)


@benchmark("foundation", __doc__, takes="about 2 min on 2 cores")
def main() -> dict:
    torch.set_num_threads(2)
    results = dict(torch=torch.__version__, device="cpu", parity_bar=1e-4, tiled_bar=1e-5, parity=[])
    for name, (cfg, sizes) in PARITY.items():
        print(f"float32 model vs float64 reference, {name}:")
        results["parity"].append(dict(config=name, psi=0.7, sizes=parity(cfg, sizes)))
    worst = max(r["max_abs_diff"] for c in results["parity"] for r in c["sizes"])
    results["parity_worst"] = worst
    print(f"worst: {worst:.3g} (bar 1e-4)")
    results["tiled"] = tiled_vs_whole(*TILED)
    print(f"tiled vs whole ({TILED[1]}x{TILED[2]}, tiles {TILED[3]}): lines {results['tiled']['lines_max_abs_diff']:.3g},"
          f" image {results['tiled']['image_max_abs_diff']:.3g} (bar 1e-5)")
    results["pickle_load"] = load = pickle_load_time()
    print(f"original pickle of the published config ({load['parameters'] / 1e6:.2f} M parameters, {load['pickle_mb']} MB):"
          f" load {load['load_s_median']} s median of {load['load_s']} (bar 10 s), images identical: "
          f"{load['images_identical']}")
    return results


if __name__ == "__main__":
    entry_point(main)()

"""The training loop: StyleGAN2-ADA's recipe as CREPS uses it (see docs/model.md).

One step = the phases G main, G reg (every 4 steps), D main, D reg (every 16 steps), each
with its own optimiser step, then the generator EMA and the ADA update.

All randomness of a step (latents, real-image indices, mirroring, augmentation, noise)
comes from one `torch.Generator`, drawn for the whole global batch on every process; each
process then takes its rows, in rounds of `batch_gpu`. Every loss is divided by the
global batch and gradients are summed over processes, so K processes compute the same
step as one process, up to the order of floating-point sums. The generator state,
optimiser moments and counters are in every snapshot, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from creps import grid
from creps.checkpoint import generator_from_state
from creps.errors import CheckpointError, CrepsError
from creps.files import creating_folder, remove_leftovers_in
from creps.images import save_image
from creps.model import Generator, GeneratorConfig
from creps.train import augment
from creps.train.data import load_images, prepare_dataset
from creps.train.discriminator import Discriminator, DiscriminatorConfig
from creps.train.distributed import Processes, reduce_gradients, start, world_size
from creps.train.loss import discriminator_loss, generator_loss, path_lengths, r1_penalty
from creps.train.record import sample_grid, tile_grid
from creps.train.snapshot import (
    load_optimizer, newest_snapshot, nimg_tag, prefixed, read_snapshot, save_snapshot,
    snapshot_name)
from creps.train.stats import StatsLog

log = logging.getLogger(__name__)

G_REG_INTERVAL = 4
D_REG_INTERVAL = 16
PL_WEIGHT = 2.0
PL_DECAY = 0.01
EMA_RAMPUP = 0.05
W_AVG_BETA = 0.998
GRID_COLS, GRID_ROWS = 8, 4


class TrainError(CrepsError):
    """Bad training options, or a run that cannot continue."""


@dataclass
class TrainOptions:
    data: str
    outdir: str
    resolution: int = 256
    kimg: float = 25000
    batch: int = 32
    batch_gpu: int | None = None
    gamma: float = 10.0
    mirror: bool = False
    aug: str = "ada"
    target: float = 0.6
    cbase: int = 32768
    cmax: int = 512
    map_depth: int = 8
    z_dim: int = 512
    glr: float = 0.002
    dlr: float = 0.002
    snap_kimg: float = 200
    tick_kimg: float = 4
    seed: int = 0
    resume: str | None = None
    device: str = "cpu"
    inception: str | None = None
    fid_images: int = 5000
    cache_dir: str | None = None

    def generator_config(self) -> GeneratorConfig:
        """As the original's `--cfg creps`: the generator gets twice --cbase and --cmax."""
        return GeneratorConfig(z_dim=self.z_dim, w_dim=self.z_dim, img_resolution=self.resolution,
                               mapping_layers=self.map_depth, channel_base=2 * self.cbase,
                               channel_max=2 * self.cmax)

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(img_resolution=self.resolution, channel_base=self.cbase, channel_max=self.cmax)


def lazy_adam(params, lr: float, interval: int) -> torch.optim.Adam:
    """Adam(betas=(0, 0.99), eps=1e-8) with lr and betas scaled by k/(k+1) for lazy regularisation."""
    c = interval / (interval + 1)
    return torch.optim.Adam(params, lr=lr * c, betas=(0.0, 0.99**c), eps=1e-8)


def check_options(opts: TrainOptions, world: int) -> int:
    """Validate what the options alone decide; returns the per-process batch."""
    if opts.batch < 1 or opts.batch % world:
        raise TrainError(f"--batch {opts.batch} is not divisible by the {world} processes")
    local = opts.batch // world
    batch_gpu = opts.batch_gpu or local
    if batch_gpu < 1 or local % batch_gpu:
        raise TrainError(f"--batch-gpu {batch_gpu} does not divide the per-process batch {local}")
    if batch_gpu % min(4, batch_gpu):
        raise TrainError(f"--batch-gpu {batch_gpu} is not a multiple of the minibatch-stddev group 4")
    if opts.aug not in ("ada", "noaug"):
        raise TrainError(f"--aug {opts.aug!r}: use ada or noaug")
    try:
        opts.generator_config()
    except ValueError as exc:
        raise TrainError(str(exc)) from exc
    return local


def not_writable(outdir: Path, exc: OSError) -> TrainError:
    return TrainError(f"--outdir {outdir}: not writable ({exc.strerror or exc})")


def check_writable(outdir: Path) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        probe = outdir / ".creps-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise not_writable(outdir, exc) from exc


@contextlib.contextmanager
def output_folder(outdir: Path):
    """While inside: `outdir` exists; if the run fails or is interrupted before it wrote
    anything there, the folders made for it go again (creating_folder)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(creating_folder(outdir))
        except OSError as exc:
            raise not_writable(outdir, exc) from exc
        yield


class Trainer:
    def __init__(self, opts: TrainOptions, procs: Processes):
        self.opts = opts
        self.procs = procs
        self.local_batch = check_options(opts, procs.world)
        self.batch_gpu = opts.batch_gpu or self.local_batch
        self.device = procs.device
        self.outdir = Path(opts.outdir)
        cache_dir = Path(opts.cache_dir) if opts.cache_dir else None
        if procs.is_main:  # the others wait, then find the prepared images in the cache
            check_writable(self.outdir)
            remove_leftovers_in(self.outdir)
            prepare_dataset(opts.data, opts.resolution, cache_dir)
        procs.barrier()
        self.images = load_images(prepare_dataset(opts.data, opts.resolution, cache_dir))
        self.gcfg = opts.generator_config()
        self.dcfg = opts.discriminator_config()
        # The networks are made in torch's default dtype, float32; float64 in tests that compare
        # sums in another order, where float32's rounding (~1e-4 after a step) would hide a bug.
        self.dtype = torch.get_default_dtype()
        torch.manual_seed(opts.seed)
        self.G = Generator(self.gcfg).to(self.device).train()
        self.D = Discriminator(self.dcfg).to(self.device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G_opt = lazy_adam(self.G.parameters(), opts.glr, G_REG_INTERVAL)
        self.D_opt = lazy_adam(self.D.parameters(), opts.dlr, D_REG_INTERVAL)
        self.gen = torch.Generator().manual_seed(opts.seed)
        self.ada = augment.AdaptiveP(opts.target, opts.batch) if opts.aug == "ada" else None
        self.pl_mean = torch.zeros([], device=self.device)
        self.cur_nimg = 0
        self.batch_idx = 0
        self.stats = StatsLog(self.outdir / "stats.jsonl", enabled=procs.is_main)
        self.real_idx = self.real_flip = None
        if opts.resume:
            self.resume(opts.resume)

    # --- rows and data -------------------------------------------------------------------------
    def rounds(self, n_global: int, round_size: int):
        """Slices of the global batch rows that this process handles, one per round."""
        local = n_global // self.procs.world
        first = self.procs.rank * local
        for offset in range(0, local, round_size):
            yield slice(first + offset, first + min(offset + round_size, local))

    def real_images(self, rows: slice) -> torch.Tensor:
        """The real images for global rows `rows`, float in [-1, 1]: (n, 3, R, R)."""
        idx = self.real_idx[rows].numpy()
        x = torch.from_numpy(np.ascontiguousarray(self.images[idx])).to(self.device, self.dtype) / 127.5 - 1
        if self.real_flip is not None:
            x = torch.where(self.real_flip[rows].to(self.device).reshape(-1, 1, 1, 1), x.flip(3), x)
        return x

    def draw_augment(self, n: int):
        return augment.draw(n, self.ada.p, self.opts.resolution, self.gen) if self.ada else None

    def augmented(self, images: torch.Tensor, params, rows: slice) -> torch.Tensor:
        if params is None or self.ada.p <= 0:
            return images
        return augment.apply(images, augment.slice_params(params, rows))

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    # --- phases --------------------------------------------------------------------------------
    def train_only(self, module: torch.nn.Module) -> None:
        self.G.requires_grad_(module is self.G)
        self.D.requires_grad_(module is self.D)
        module.zero_grad(set_to_none=True)

    def finish_phase(self, module: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        reduce_gradients(module, self.procs)
        opt.step()

    def g_main(self) -> None:
        B = self.opts.batch
        z = torch.randn(B, self.gcfg.z_dim, generator=self.gen)
        aug = self.draw_augment(B)
        self.train_only(self.G)
        loss_sum = 0.0
        for rows in self.rounds(B, self.batch_gpu):
            with self.autocast():
                img = self.G(z[rows].to(self.device))  # (n, 3, R, R)
                logits = self.D(self.augmented(img, aug, rows))  # (n, 1)
            loss = generator_loss(logits.to(self.dtype))
            (loss.sum() / B).backward()
            loss_sum += loss.detach().sum().item()
        self.finish_phase(self.G, self.G_opt)
        self.stats.add("Loss/G/loss", self.procs.sum_floats(loss_sum)[0] / B)

    def g_reg(self) -> None:
        local = max(1, self.local_batch // 2)
        n = local * self.procs.world
        z = torch.randn(n, self.gcfg.z_dim, generator=self.gen)
        res = self.opts.resolution
        noise = torch.randn(n, 3, res, res, generator=self.gen)
        self.train_only(self.G)
        length_sum, penalty_sum = 0.0, 0.0
        for rows in self.rounds(n, max(1, self.batch_gpu // 2)):
            lengths = path_lengths(self.G, z[rows].to(self.device), noise[rows].to(self.device))  # (n,)
            penalty = (lengths - self.pl_mean).square()
            (penalty.sum() * (PL_WEIGHT * G_REG_INTERVAL / n)).backward()
            length_sum += lengths.detach().sum().item()
            penalty_sum += penalty.detach().sum().item()
        self.finish_phase(self.G, self.G_opt)
        length_sum, penalty_sum = self.procs.sum_floats(length_sum, penalty_sum)
        self.pl_mean.lerp_(torch.tensor(length_sum / n, device=self.device), PL_DECAY)
        self.stats.add("Loss/pl_penalty", penalty_sum / n)
        self.stats.add("Loss/pl_mean", self.pl_mean.item())

    def d_main(self) -> None:
        B = self.opts.batch
        z = torch.randn(B, self.gcfg.z_dim, generator=self.gen)
        aug_fake, aug_real = self.draw_augment(B), self.draw_augment(B)
        self.train_only(self.D)
        w_sum = torch.zeros(self.gcfg.w_dim, dtype=torch.float64, device=self.device)
        totals = torch.zeros(4, dtype=torch.float64)  # loss, real score, fake score, sum of sign(real)
        for rows in self.rounds(B, self.batch_gpu):
            with torch.no_grad(), self.autocast():
                ws = self.G.mapping(z[rows].to(self.device))  # (n, num_ws, w_dim)
                img = self.G.synthesis(ws)  # (n, 3, R, R)
            w_sum += ws[:, 0].double().sum(dim=0)
            with self.autocast():
                fake_logits = self.D(self.augmented(img, aug_fake, rows)).to(self.dtype)
                real_logits = self.D(self.augmented(self.real_images(rows), aug_real, rows)).to(self.dtype)
            loss = discriminator_loss(fake_logits, real_logits)
            (loss.sum() / B).backward()
            totals += torch.tensor([loss.sum().item(), real_logits.sum().item(), fake_logits.sum().item(),
                                    real_logits.sign().sum().item()], dtype=torch.float64)
        self.finish_phase(self.D, self.D_opt)
        self.procs.sum_(w_sum)
        w_avg = self.G.mapping.w_avg
        w_avg.copy_((w_sum / B).to(w_avg.dtype).lerp(w_avg, W_AVG_BETA))
        loss_sum, real_sum, fake_sum, sign_sum = self.procs.sum_(totals.to(self.device)).tolist()
        self.stats.add("Loss/D/loss", loss_sum / B)
        self.stats.add("Loss/scores/real", real_sum / B)
        self.stats.add("Loss/scores/fake", fake_sum / B)
        if self.ada:
            self.ada.accumulate(sign_sum, B)

    def d_reg(self) -> None:
        B = self.opts.batch
        aug = self.draw_augment(B)
        self.train_only(self.D)
        penalty_sum = 0.0
        for rows in self.rounds(B, self.batch_gpu):
            real = self.real_images(rows).requires_grad_(True)
            logits = self.D(self.augmented(real, aug, rows))
            penalty = r1_penalty(logits, real)  # (n,)
            (penalty.sum() * (self.opts.gamma / 2 * D_REG_INTERVAL / B)).backward()
            penalty_sum += penalty.detach().sum().item()
        self.finish_phase(self.D, self.D_opt)
        self.stats.add("Loss/r1_penalty", self.procs.sum_floats(penalty_sum)[0] / B)

    def update_ema(self) -> None:
        B = self.opts.batch
        ema_nimg = min(B * 10 / 32 * 1000, self.cur_nimg * EMA_RAMPUP)
        beta = 0.5 ** (B / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

    def step(self) -> None:
        B = self.opts.batch
        self.real_idx = torch.randint(len(self.images), (B,), generator=self.gen)
        self.real_flip = torch.rand(B, generator=self.gen) < 0.5 if self.opts.mirror else None
        phases = [("Gmain", self.g_main, 1), ("Greg", self.g_reg, G_REG_INTERVAL),
                  ("Dmain", self.d_main, 1), ("Dreg", self.d_reg, D_REG_INTERVAL)]
        for name, run, interval in phases:
            if self.batch_idx % interval:
                continue
            started = time.perf_counter()
            run()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.stats.add_sum(f"Timing/{name}_sec", time.perf_counter() - started)
        self.update_ema()
        self.cur_nimg += B
        self.batch_idx += 1
        if self.ada:
            self.ada.step(self.batch_idx)
            self.stats.add("Augment/p", self.ada.p)

    # --- snapshots -----------------------------------------------------------------------------
    def train_meta(self) -> dict:
        return {"cur_nimg": self.cur_nimg, "batch_idx": self.batch_idx,
                "ada": self.ada.state() if self.ada else None,
                "D_config": self.dcfg.to_dict(), "options": dataclasses.asdict(self.opts)}

    def save(self) -> Path:
        path = self.outdir / snapshot_name(self.cur_nimg)
        save_snapshot(path, {"G_ema": self.G_ema, "G": self.G, "D": self.D},
                      {"G_opt": self.G_opt, "D_opt": self.D_opt},
                      {"rng": self.gen.get_state(), "pl_mean": self.pl_mean}, self.train_meta(), self.gcfg)
        return path

    def resume(self, resume: str) -> None:
        path = newest_snapshot(self.outdir) if resume == "auto" else Path(resume)
        if path is None:
            log.info("--resume auto: no snapshot in %s, starting from scratch", self.outdir)
            return
        if not path.is_file():
            raise TrainError(f"--resume {path}: no such snapshot")
        tensors, meta, gconfig = read_snapshot(path)
        if gconfig != self.gcfg.to_dict() or meta.get("D_config") != self.dcfg.to_dict():
            raise TrainError(f"--resume {path}: the snapshot's networks do not match the options "
                             f"(snapshot G {gconfig}, D {meta.get('D_config')}; "
                             f"options give G {self.gcfg.to_dict()}, D {self.dcfg.to_dict()})")
        for name, net in (("G", self.G), ("G_ema", self.G_ema)):
            net.load_state_dict(generator_from_state(self.gcfg, prefixed(tensors, f"{name}."), str(path)).state_dict())
        try:
            self.D.load_state_dict(prefixed(tensors, "D."))
            load_optimizer("G_opt", self.G_opt, tensors)
            load_optimizer("D_opt", self.D_opt, tensors)
            self.gen.set_state(tensors["state.rng"].to(torch.uint8))  # stored as float32, exactly
            self.pl_mean.copy_(tensors["state.pl_mean"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"--resume {path}: incomplete training state ({exc})") from exc
        self.cur_nimg, self.batch_idx = int(meta["cur_nimg"]), int(meta["batch_idx"])
        if self.ada and meta.get("ada"):
            self.ada.load_state(meta["ada"])
        self.stats.truncate(self.cur_nimg / 1000)
        log.info("resumed from %s at %.3f kimg", path, self.cur_nimg / 1000)

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> Path | None:
        opts = self.opts
        total = int(round(opts.kimg * 1000))
        tick_nimg = max(1, int(opts.tick_kimg * 1000))
        snap_nimg = max(1, int(opts.snap_kimg * 1000))
        fid = self.make_fid() if opts.inception and self.procs.is_main else None
        if self.procs.is_main and self.cur_nimg == 0:
            n = GRID_ROWS * GRID_COLS
            self.real_idx, self.real_flip = torch.linspace(0, len(self.images) - 1, n).long(), None  # a spread
            reals = grid.to_uint8(self.real_images(slice(0, n)).cpu().numpy())  # (n, R, R, 3)
            save_image(tile_grid(reals, GRID_ROWS, GRID_COLS), self.outdir / "reals.png")
        last = None
        bar = tqdm(total=total, initial=min(self.cur_nimg, total), unit="img", desc="training",
                   disable=not self.procs.is_main)
        tick_start = time.perf_counter()
        while self.cur_nimg < total:
            before = self.cur_nimg
            self.step()
            bar.update(min(self.cur_nimg, total) - min(before, total))
            done = self.cur_nimg >= total
            snap = done or self.cur_nimg // snap_nimg > before // snap_nimg
            if snap or self.cur_nimg // tick_nimg > before // tick_nimg:
                extra = {"kimg": self.cur_nimg / 1000, "sec_per_tick": time.perf_counter() - tick_start}
                if snap:
                    last = self.snapshot(fid, extra)
                self.stats.flush(extra)
                tick_start = time.perf_counter()
        bar.close()
        return last

    def snapshot(self, fid, extra: dict) -> Path | None:
        path = None
        if self.procs.is_main:
            path = self.save()
            samples = sample_grid(self.G_ema, GRID_ROWS, GRID_COLS, self.device)
            save_image(samples, self.outdir / f"fakes{nimg_tag(self.cur_nimg)}.png")
            log.info("snapshot %s", path)
            if fid is not None:
                extra["Metrics/fid"] = fid(self.G_ema)
        self.procs.barrier()
        return path

    def make_fid(self):
        from creps.train.fid import FidMetric

        return FidMetric(self.opts.inception, self.images, self.opts.fid_images, self.device)


def train(opts: TrainOptions) -> Path | None:
    """Run (or continue) a training run; returns the last snapshot written (main process).

    The options and the device are checked before anything is made; a run that stops on an
    error before writing anything leaves no empty --outdir."""
    check_options(opts, world_size())  # before joining a process group, so bad options fail at once
    procs = start(opts.device)
    try:
        with output_folder(Path(opts.outdir)) if procs.is_main else contextlib.nullcontext():
            return Trainer(opts, procs).run()
    finally:
        procs.close()

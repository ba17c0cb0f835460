"""The training loop: exact resume, batch splitting, snapshots, the recipe's constants."""

import itertools
import json
import os
import time

import pytest
import torch
from safetensors.torch import load_file

from creps.checkpoint import load_generator, save_checkpoint
from creps.errors import CheckpointError
from creps.train.distributed import Processes
from creps.train.loop import Trainer, TrainError, lazy_adam, train
from creps.train.snapshot import newest_snapshot, snapshot_nimg

CPU = Processes(rank=0, world=1, device=torch.device("cpu"))


def run(opts, ada_p=None):
    trainer = Trainer(opts, CPU)
    if ada_p is not None and trainer.cur_nimg == 0:
        trainer.ada.p = ada_p  # exercise the augmentations from the first step
    return trainer.run(), trainer


def tensors_of(path):
    return load_file(str(path))


def test_resumed_run_equals_uninterrupted_run(tiny_options, tmp_path):
    # 17 steps of 4 images: G reg at steps 0, 4, ..., 16; D reg (R1) at steps 0 and 16.
    whole, _ = run(tiny_options(outdir=str(tmp_path / "whole"), kimg=0.068, snap_kimg=0.032), ada_p=0.3)
    part = tiny_options(outdir=str(tmp_path / "part"), kimg=0.032, snap_kimg=0.032)
    run(part, ada_p=0.3)
    resumed, trainer = run(tiny_options(outdir=str(tmp_path / "part"), kimg=0.068, snap_kimg=0.032, resume="auto"))
    assert trainer.cur_nimg == 68 and trainer.batch_idx == 17
    a, b = tensors_of(whole), tensors_of(resumed)
    assert a.keys() == b.keys()
    assert {k.split(".")[0] for k in a} == {"G_ema", "G", "D", "state"}
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
    lines = [json.loads(x) for x in (tmp_path / "part" / "stats.jsonl").read_text().splitlines()]
    reference = [json.loads(x) for x in (tmp_path / "whole" / "stats.jsonl").read_text().splitlines()]
    assert [x["kimg"] for x in lines] == [x["kimg"] for x in reference]
    assert [x["Loss/G/loss"] for x in lines] == [x["Loss/G/loss"] for x in reference]
    assert lines[-1]["Augment/p"] == reference[-1]["Augment/p"] > 0


@pytest.fixture
def float64():
    """Networks, data and sums in float64 (the trainer makes its networks in torch's default dtype).

    In float32 the same gradient summed in another order (rounds, or another thread count's
    split of a reduction) differs by up to ~1e-3 of its largest element after the deep
    backward passes; in float64 that is ~1e-12, far below what a wrongly sliced batch gives."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


FLOAT64_BAR = 1e-9  # of a tensor's largest element; measured differences are ~1e-14 at any thread count


def gradient_spy(trainer, recorded, replay=False):
    """Record each phase's gradients (before the optimiser step) into `recorded`; with `replay`,
    instead compare with, then replace by, the recorded ones, so both trainers stay in lockstep."""
    finish = trainer.finish_phase
    phase = itertools.count()

    def spy(module, opt):
        grads = {name: p.grad for name, p in module.named_parameters() if p.grad is not None}
        if not replay:
            recorded.append({name: g.clone() for name, g in grads.items()})
        else:
            reference = recorded[next(phase)]
            assert grads.keys() == reference.keys()
            for name, g in grads.items():
                assert g.dtype == torch.float64, name
                scale = reference[name].abs().max()
                assert (g - reference[name]).abs().max() <= FLOAT64_BAR * scale, name
                g.copy_(reference[name])
        finish(module, opt)

    trainer.finish_phase = spy


@pytest.mark.parametrize("batch", [8, 12])
def test_rounds_give_the_same_gradients_as_one_round(tiny_options, tmp_path, batch, float64):
    # Comparing weights after Adam would not do: its first step moves every weight by +-lr,
    # so a gradient at rounding level flips a weight by 2 lr.
    one = Trainer(tiny_options(outdir=str(tmp_path / "one"), batch=batch), CPU)
    rounds = Trainer(tiny_options(outdir=str(tmp_path / "rounds"), batch=batch, batch_gpu=4), CPU)
    recorded = []
    gradient_spy(one, recorded)
    gradient_spy(rounds, recorded, replay=True)
    for trainer in (one, rounds):
        trainer.ada.p = 0.5  # every augmentation in play from the first step
        for _ in range(2):  # step 0 runs all four phases, step 1 the two main ones
            trainer.step()
    assert len(recorded) == 6
    for a, b in zip(one.G.state_dict().values(), rounds.G.state_dict().values()):
        assert torch.allclose(a, b, rtol=FLOAT64_BAR, atol=0)  # w_avg and pl_mean: sums in another order


def test_snapshot_is_a_generator_checkpoint(tiny_options):
    opts = tiny_options(kimg=0.008)
    path = train(opts)
    assert path.name == "network-snapshot-000000008.safetensors"
    G = load_generator(path)
    state = tensors_of(path)
    for key, value in G.state_dict().items():
        assert torch.equal(value, state[f"G_ema.{key}"])
    assert G.cfg.channel_base == 2 * opts.cbase and G.cfg.channel_max == 2 * opts.cmax
    assert G(torch.randn(2, opts.z_dim)).shape == (2, 3, 16, 16)
    out = path.parent
    assert (out / "reals.png").is_file() and (out / "fakes000000008.png").is_file()
    assert not list(out.glob(".*partial"))


def test_snapshots_below_one_kimg_have_names_in_training_order(tiny_options, tmp_path):
    # 5 steps of 4 images, a snapshot after each: the names once all read ...000000.
    last = train(tiny_options(kimg=0.02, snap_kimg=0.004))
    out = last.parent
    names = sorted(p.name for p in out.glob("network-snapshot-*.safetensors"))
    assert names == [f"network-snapshot-{n:09d}.safetensors" for n in (4, 8, 12, 16, 20)]
    assert [snapshot_nimg(out / name) for name in names] == [4, 8, 12, 16, 20]
    assert sorted(p.name for p in out.glob("fakes*.png")) == [f"fakes{n:09d}.png" for n in (4, 8, 12, 16, 20)]
    assert newest_snapshot(out) == last
    os.utime(out / names[1], (time.time() + 60,) * 2)  # newest by images seen, not by time
    assert newest_snapshot(out) == last
    assert Trainer(tiny_options(kimg=0.04, resume="auto"), CPU).cur_nimg == 20


def test_resume_auto_reads_the_older_kimg_names(tiny_options):
    last = train(tiny_options(kimg=0.012, snap_kimg=0.004))
    old = last.with_name("network-snapshot-000000.safetensors")  # as runs before named it by kimg
    last.rename(old)
    assert newest_snapshot(last.parent) == old
    assert Trainer(tiny_options(resume="auto"), CPU).cur_nimg == 12


def test_ema_follows_g_with_ramp_up(tiny_options):
    trainer = Trainer(tiny_options(), CPU)
    trainer.step()  # cur_nimg was 0: ramp-up gives beta = 0, G_ema = G
    for p_ema, p in zip(trainer.G_ema.parameters(), trainer.G.parameters()):
        assert torch.equal(p_ema, p)
    before = [p.clone() for p in trainer.G_ema.parameters()]
    trainer.step()  # cur_nimg 4: ema_nimg = min(4*10/32*1000, 0.2) = 0.2 -> beta = 0.5 ** 20
    beta = 0.5 ** (4 / 0.2)
    for b, p_ema, p in zip(before, trainer.G_ema.parameters(), trainer.G.parameters()):
        assert torch.allclose(p_ema, p + (b - p) * beta, atol=1e-7)


def test_lazy_adam_adjustment():
    opt = lazy_adam([torch.nn.Parameter(torch.zeros(1))], 0.002, 16)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.002 * 16 / 17)
    assert group["betas"] == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert group["eps"] == 1e-8


def test_resume_refuses_other_networks(tiny_options):
    train(tiny_options(kimg=0.004))
    with pytest.raises(TrainError, match="do not match the options"):
        Trainer(tiny_options(cmax=8, resume="auto"), CPU)


def test_resume_refuses_a_plain_generator(tiny_options, tmp_path):
    trainer = Trainer(tiny_options(), CPU)
    plain = tmp_path / "g.safetensors"
    save_checkpoint(plain, trainer.G_ema, trainer.gcfg)
    with pytest.raises(CheckpointError, match="not a training snapshot"):
        Trainer(tiny_options(resume=str(plain)), CPU)
    with pytest.raises(TrainError, match="no such snapshot"):
        Trainer(tiny_options(resume=str(tmp_path / "missing.safetensors")), CPU)


def test_resume_auto_without_snapshot_starts_fresh_and_cleans_leftovers(tiny_options, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".network-snapshot-000000.safetensors.abc.partial").write_bytes(b"half")
    (out / "network-snapshot-000007.safetensors").write_bytes(b"broken, not from us")
    trainer = Trainer(tiny_options(resume="auto"), CPU)
    assert trainer.cur_nimg == 0
    assert not list(out.glob(".*partial"))
    assert newest_snapshot(out) is None


def test_stats_past_the_snapshot_are_dropped_on_resume(tiny_options, tmp_path):
    train(tiny_options(kimg=0.008))
    stats = tmp_path / "run" / "stats.jsonl"
    kept = stats.read_text()
    stats.write_text(kept + json.dumps({"kimg": 0.012, "Loss/G/loss": 1.0}) + "\n")
    Trainer(tiny_options(resume="auto"), CPU)
    assert stats.read_text() == kept


@pytest.mark.parametrize("overrides,message", [
    ({"batch": 6, "batch_gpu": 4}, "does not divide"),
    ({"batch": 6}, "multiple of the minibatch-stddev group"),
    ({"resolution": 24}, "power of two"),
])
def test_bad_options(tiny_options, overrides, message):
    with pytest.raises(TrainError, match=message):
        train(tiny_options(**overrides))

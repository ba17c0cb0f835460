"""Fuzz the three readers of untrusted files with more inputs than CI does: bundle manifests,
our safetensors checkpoints and original-format pickles (the engine: tests/fuzz_readers.py).
Reports inputs tried per reader, outcomes by error type, tracebacks (with the index that
reproduces each), hangs and payloads that ran: the last three must be empty.

    python benchmarks/fuzz.py --inputs 20000 --seed 1
    python benchmarks/fuzz.py --inputs 500 --reader original
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from common import benchmark

ROOT = Path(__file__).resolve().parents[1]
FUZZER = ROOT / "tests" / "fuzz_readers.py"
READERS = ("bundle", "checkpoint", "original")


def tiny_bundle(folder: Path) -> Path:
    """A real bundle of a small generator to mutate the manifest of (needs the export extra)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch

    from creps.export import export_bundle
    from creps.model import Generator, GeneratorConfig
    from fuzz_readers import FUZZ_CONFIG

    torch.manual_seed(0)
    return export_bundle(Generator(GeneratorConfig(**FUZZ_CONFIG)).eval(), folder / "bundle", verify=False)


@benchmark("fuzz", __doc__, takes="about 1 min per 1000 inputs of each reader on 2 cores (pickles are the slowest)")
@click.option("--inputs", type=click.IntRange(1), default=1000, show_default=True, help="Inputs per reader.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; input i of a run reproduces alone.")
@click.option("--reader", "readers", type=click.Choice(READERS), multiple=True,
              help="Only these readers [default: all three].")
def main(inputs: int, seed: int, readers: tuple[str, ...]) -> dict:
    report = {}
    with tempfile.TemporaryDirectory(prefix="creps-fuzz-bench-") as tmp:
        bundle = tiny_bundle(Path(tmp)) if "bundle" in (readers or READERS) else None
        for reader in readers or READERS:
            extra = ["--bundle", str(bundle)] if reader == "bundle" else []
            # A child process per reader: a crash or a hang inside C code ends that reader, not the run.
            done = subprocess.run([sys.executable, str(FUZZER), "--reader", reader, "--inputs", str(inputs),
                                   "--seed", str(seed), *extra], capture_output=True, text=True)
            if done.returncode:
                report[reader] = {"died": done.returncode, "stderr": done.stderr[-2000:]}
            else:
                report[reader] = json.loads(done.stdout)
            click.echo(f"{reader}: {json.dumps(report[reader])}")
    return {"inputs_per_reader": inputs, "seed": seed, "readers": report}


if __name__ == "__main__":
    main()

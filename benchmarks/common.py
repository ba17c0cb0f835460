"""What every benchmark script shares: a command line with --help that states its run time,
output to ./creps-bench-out/ (or --out) unless --record asks to update the committed record in
benchmarks/results/, and a record that names the machine (creps.bench.Run). Scripts import it
as `common` (Python puts the script's folder first on sys.path) and run their command as a console script does
(`creps.cli.entry_point(main)()`), so a refusal is one line.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from creps.bench import SCRATCH, Run, output_folder, save_json
from creps.cli import command

RESULTS = Path(__file__).resolve().parent / "results"


def as_written(text: str) -> str:
    """A docstring for click's help, each paragraph kept as wrapped in the source (lists stay lists)."""
    return "\n\n".join(f"\b\n{paragraph}" for paragraph in text.strip().split("\n\n"))


def benchmark(name: str, description: str, takes: str):
    """`@benchmark("foundation", __doc__, takes="about 2 min on 2 cores")` over a function that
    measures and returns its report (its click options stacked below this decorator): a
    command that writes the report, with the machine and run time, as NAME.json."""
    def wrap(measure):
        @command(help=f"{as_written(description)}\n\nTakes {takes}. Writes {name}.json into --out, or with "
                      f"--record updates benchmarks/results/{name}.json.")
        @click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                      help=f"Folder for {name}.json [default: ./{SCRATCH}/].")
        @click.option("--record", is_flag=True, help=f"Update the committed benchmarks/results/{name}.json.")
        @functools.wraps(measure)
        def script(out, record, **options):
            folder = output_folder(out, record, RESULTS)
            run = Run()
            report = measure(**options)
            path = folder / f"{name}.json"
            save_json(path, {**report, **run.record()})
            click.echo(f"saved {path}")

        return script

    return wrap

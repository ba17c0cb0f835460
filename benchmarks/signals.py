"""Issue 10's signal loop: SIGINT and SIGTERM at random moments in every command that writes.

Each case (tests/signal_loop.py: creps-run into a folder and into one file, creps-run's
first-run export of the default model, creps-export, creps-generate, creps-calib,
creps-train, all on a tiny model) runs once without a signal, then --runs times with a
seeded random signal (SIGINT to the process group as a terminal's Ctrl-C, SIGTERM to the
process as `kill`) after a random delay up to that first run's length. After each run the
folder is inspected: temporaries (*.partial), empty folders, PNGs that do not decode or
have the wrong size, JSON that does not parse, bundles that fail their hashes. Reports
runs, kills (exit 130 / 143 with the one line `interrupted`), runs that finished first,
and the problems found (must be 0), per case. tests/test_signals.py runs fewer.
"""

from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

import click
from common import benchmark

from creps.cli import entry_point

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from signal_loop import cases, make_models, signal_loop  # noqa: E402


@benchmark("signals", __doc__, takes="about 1 min per 10 runs of a case on 2 cores (--runs 30: about 20 min)")
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True, help="Signalled runs per case.")
@click.option("--case", "only", multiple=True, help="Only this case (repeatable), e.g. 'creps-run file'.")
@click.option("--seed", default=0, show_default=True, help="Seed of the signals and delays.")
def main(runs: int, only: tuple[str, ...], seed: int) -> dict:
    names = list(cases(dict.fromkeys(("checkpoint", "bundle", "images"), Path())))  # the cases only name the files
    unknown = set(only) - set(names)
    if unknown:
        raise click.BadParameter(f"{', '.join(sorted(unknown))}: not one of {', '.join(names)}", param_hint="--case")
    results = {}
    with tempfile.TemporaryDirectory(prefix="creps-signals-") as scratch:
        scratch = Path(scratch)
        for i, (name, case) in enumerate(cases(make_models(scratch)).items()):
            if only and name not in only:
                continue
            outcomes = signal_loop(case, scratch / f"case{i}", runs, seed=seed + i)
            signalled = outcomes[1:]
            kinds = collections.Counter("killed" if o.interrupted else "finished first" if o.code == 0 else "other"
                                        for o in signalled)
            problems = [f"signal {o.signum} after {o.delay:.2f} s: {p}" for o in outcomes for p in o.problems]
            results[name] = {"runs": len(signalled), "killed": kinds["killed"], "finished_first": kinds["finished first"],
                             "other_exits": kinds["other"], "problems": len(problems), "problem_list": problems[:20],
                             "unsignalled_run_s": round(outcomes[0].seconds, 2)}
            click.echo(f"{name}: {len(signalled)} runs, {kinds['killed']} killed, {kinds['finished first']} finished "
                       f"first, {len(problems)} problems (partial, empty or corrupt files left, wrong exits)")
            for problem in problems[:20]:
                click.echo(f"  {problem}")
    total = {key: sum(r[key] for r in results.values()) for key in ("runs", "killed", "problems")}
    click.echo(f"all: {total['runs']} runs, {total['killed']} killed, {total['problems']} problems")
    return {"cases": results, "total": total}


if __name__ == "__main__":
    entry_point(main)()

"""Training statistics: averaged over a tick, appended to a JSONL file (and TensorBoard if installed)."""

from __future__ import annotations

import functools
import json
import logging
import math
from collections import defaultdict
from pathlib import Path

from creps.files import atomic_path

log = logging.getLogger(__name__)


class StatsLog:
    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self.means: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        self.sums: dict[str, float] = defaultdict(float)

    @functools.cached_property
    def board(self):
        """TensorBoard's writer, or None; made at the first flush, as it writes a file at once (a
        run that fails before its first tick leaves no folder, see train.loop.output_folder)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.path.parent))

    def truncate(self, kimg: float) -> None:
        """Drop lines past `kimg` (written by a run killed after its last snapshot)."""
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line).get("kimg", 0) <= kimg + 1e-9]
        if len(kept) != len(lines):
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(kept))

    def add(self, name: str, value: float) -> None:
        """A value to average over the tick."""
        entry = self.means[name]
        entry[0] += value
        entry[1] += 1

    def add_sum(self, name: str, value: float) -> None:
        """A value to total over the tick (timings)."""
        self.sums[name] += value

    def flush(self, extra: dict) -> dict:
        """Write one line with the tick's means and sums plus `extra`; start a new tick."""
        record = dict(extra)
        record.update({name: total / count for name, (total, count) in sorted(self.means.items())})
        record.update(sorted(self.sums.items()))
        self.means.clear()
        self.sums.clear()
        if not self.enabled:
            return record
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.board is not None:
            step = int(round(record.get("kimg", 0) * 1000))
            for name, value in record.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.board.add_scalar(name, value, global_step=step)
            self.board.flush()
        log.info("kimg %.3f  G %.3f  D %.3f  p %.3f  %.1f s", record.get("kimg", 0),
                 record.get("Loss/G/loss", math.nan), record.get("Loss/D/loss", math.nan),
                 record.get("Augment/p", 0.0), record.get("sec_per_tick", math.nan))
        return record

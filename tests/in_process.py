"""Run a creps command in this process, through the same error boundary as its console script."""

from __future__ import annotations

import sys

from creps.cli import run_command


def in_process(monkeypatch, capsys, command, name: str, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `name args...`; a command that returns is exit code 0."""
    monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
    try:
        run_command(command)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err

"""serve/build.sh refuses in one line: without npm (naming the package to install) and for an unknown option."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BUILD = Path(__file__).resolve().parents[2] / "serve" / "build.sh"
TOOLS = ("bash", "dirname", "id", "dpkg-query", "grep")  # what the script runs before it looks for npm


def run(path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BUILD), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": path})


def test_without_npm_one_line_names_the_package(tmp_path):
    for tool in TOOLS:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} not on PATH")
        (tmp_path / tool).symlink_to(found)
    result = run(str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "npm not found" in lines[0] and "apt-get install npm" in lines[0], result.stderr
    assert result.stdout == ""


def test_an_unknown_option_is_refused():
    result = run(os.environ["PATH"], "--brwoser")
    assert result.returncode == 2
    assert result.stderr.strip() == "build.sh: unknown option --brwoser (usage: bash serve/build.sh [--browser])"

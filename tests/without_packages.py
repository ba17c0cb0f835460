"""Run a console script in a subprocess where some packages cannot be imported (a device without PyTorch).

A meta-path finder placed first refuses every import of the blocked top-level names (an
ImportError, as an absent package gives) and records the names tried; the record is
written to a file when the process exits, so a test can also assert that a path never
even looked for them.
"""

from __future__ import annotations

import subprocess
import sys

# argv: record file, comma-separated blocked names, console-script target "module:function", the command's args.
PROGRAM = """
import atexit, importlib, sys

class Blocker:
    def __init__(self, blocked):
        self.blocked, self.tried = blocked, []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            self.tried.append(name)
            raise ImportError(f"{name} is blocked in this test")

record, blocked, target = sys.argv[1:4]
del sys.argv[1:4]
blocker = Blocker(blocked.split(","))
sys.meta_path.insert(0, blocker)
atexit.register(lambda: open(record, "w").write(" ".join(blocker.tried)))
module, function = target.split(":")
sys.exit(getattr(importlib.import_module(module), function)())
"""

# A runtime-only install (`pip install -e ".[ort]"`): ONNX Runtime, none of the PyTorch side.
TORCH_SIDE = ("torch", "onnx", "onnxscript", "safetensors")


def run_without(blocked, target: str, *args, tmp_path, env=None, timeout: float = 300):
    """(the finished process, the blocked modules it tried to import) of `target` run with `args`."""
    record = tmp_path / "blocked_imports.txt"
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(record), ",".join(blocked), target, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    return done, record.read_text().split()


def assert_one_line_error(done, *messages):
    """Exit 1, no traceback, and stderr is one line containing every message."""
    err = done.stderr.strip()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in err and len(err.splitlines()) == 1, done.stderr
    for message in messages:
        assert message in err, done.stderr

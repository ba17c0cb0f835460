"""creps.cli: every command takes -h and --version; a signal is one line, exit 128 + signal, cleanup run."""

from __future__ import annotations

import builtins
import importlib.metadata
import logging
import os
import signal
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import click
import pytest

from creps.cli import NativeImports, command, entry_point, run_command

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

SCRIPTS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    """The console script `name` as pip installs it (module:function from pyproject.toml), in a subprocess."""
    module, function = SCRIPTS[name].split(":")
    code = f"import sys, importlib; sys.argv[0] = {name!r}; importlib.import_module({module!r}).{function}()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_version_and_short_help(name):
    version = script(name, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"{name} {importlib.metadata.version('creps')}", \
        version.stderr
    short = script(name, "-h")
    assert short.returncode == 0 and "Usage:" in short.stdout and "--version" in short.stdout, short.stderr


def interrupted_command(signum: int, cleaned: list):
    @command()
    def cli():
        try:
            os.kill(os.getpid(), signum)
            signal.pause()  # the handler raises out of here
        finally:
            os.kill(os.getpid(), signum)  # a second one while cleaning up is ignored
            cleaned.append(True)

    return cli


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("quiet", [False, True])
def test_a_signal_runs_the_cleanup_and_says_it_once(monkeypatch, capsys, signum, code, quiet):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cleaned = []
    monkeypatch.setattr(sys, "argv", ["cmd"])
    with pytest.raises(SystemExit) as exit:
        run_command(interrupted_command(signum, cleaned), quiet_interrupt=quiet)
    assert exit.value.code == code and cleaned == [True]
    assert capsys.readouterr().err == ("" if quiet else "interrupted\n")
    assert {s: signal.getsignal(s) for s in before} == before  # this process's own handlers are back


def test_an_ignored_signal_stays_ignored(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cmd"])
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's background job has it
    try:
        @click.command()
        def cli():
            os.kill(os.getpid(), signal.SIGINT)
            click.echo("done")

        run_command(cli)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().out == "done\n"


def test_a_signal_a_library_turned_into_its_own_error_is_still_an_interrupt(monkeypatch, capsys):
    """torch.export wraps whatever its tracing raises, our Interrupted included, in an error of its own."""
    monkeypatch.setattr(sys, "argv", ["cmd"])

    @command()
    def cli():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
        except BaseException as exc:
            raise RuntimeError("Failed to export the model with torch.export") from exc

    with pytest.raises(SystemExit) as exit:
        run_command(cli)
    assert exit.value.code == 143 and capsys.readouterr().err == "interrupted\n"


def importing_command(tmp_path, monkeypatch, native: bool):
    """A command that imports a package which signals itself halfway through its own code;
    `native`: the package is counted as one whose import calls back from C++ into Python."""
    package = tmp_path / "selfsignalling"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os, pathlib, signal\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "total = sum(range(100000))  # bytecode runs here: a signal not held is raised on the way\n"
        "pathlib.Path(__file__).with_name('finished').touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "selfsignalling", raising=False)
    monkeypatch.setattr("creps.cli.NATIVE_IMPORTS", frozenset({"selfsignalling"} if native else ()))
    monkeypatch.setattr(sys, "argv", ["cmd"])
    ran = []

    @command()
    def cli():
        importlib.import_module("selfsignalling")
        ran.append(True)

    return cli, ran


@pytest.mark.parametrize("native", [True, False])
def test_a_signal_during_a_native_import_waits_for_its_end(tmp_path, monkeypatch, capsys, native):
    """torch's import runs Python called from C++ (_c10d_init): an exception raised there ends
    in std::terminate, so a signal then is raised once the package is in, and not later."""
    cli, ran = importing_command(tmp_path, monkeypatch, native)
    with pytest.raises(SystemExit) as exit:
        run_command(cli)
    assert exit.value.code == 143 and capsys.readouterr().err == "interrupted\n"
    assert (tmp_path / "selfsignalling" / "finished").exists() is native
    assert ran == [] and not any(isinstance(f, NativeImports) for f in sys.meta_path)


def test_a_signal_during_a_native_submodule_import_leaves_it_imported_once(tmp_path, monkeypatch, capsys):
    """torch imports submodules lazily, long after `import torch`, and each registers operators
    as it runs: the signal is raised once the import statement has returned, with the module
    in sys.modules, so nothing imports (and registers) it a second time."""
    package = tmp_path / "selfsignalling"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "late.py").write_text(
        "import os, pathlib, signal\n"
        "with pathlib.Path(__file__).with_name('runs').open('a') as runs:\n"
        "    runs.write('ran\\n')\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "total = sum(range(100000))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("selfsignalling", "selfsignalling.late"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr("creps.cli.NATIVE_IMPORTS", frozenset({"selfsignalling"}))
    monkeypatch.setattr(sys, "argv", ["cmd"])
    ran, before = [], builtins.__import__

    @command()
    def cli():
        import selfsignalling  # the package first, as `import torch` is
        import selfsignalling.late
        ran.append(selfsignalling.late.total)

    with pytest.raises(SystemExit) as exit:
        run_command(cli)
    assert exit.value.code == 130 and capsys.readouterr().err == "interrupted\n"
    assert ran == [] and builtins.__import__ is before
    importlib.import_module("selfsignalling.late")  # as a library's cleanup might
    assert (package / "runs").read_text() == "ran\n"


class Dropping:
    """Ways a signal can come while Python runs code whose exceptions it drops (reports to
    sys.unraisablehook): each signals the process from inside such a callback."""

    @staticmethod
    def signal_inside():
        os.kill(os.getpid(), signal.SIGTERM)
        return sum(range(10000))  # bytecode runs here: the handler raises inside the callback

    @classmethod
    def weakref_callback(cls):
        thing = cls()
        kept = weakref.ref(thing, lambda _: cls.signal_inside())
        del thing
        return kept

    @classmethod
    def finalizer(cls):
        class Finalized:
            def __del__(self):
                cls.signal_inside()
        Finalized()


@pytest.mark.parametrize("how", ["weakref_callback", "finalizer"])
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # nothing reaches pytest's hook
def test_a_signal_during_a_callback_whose_exceptions_python_drops_ends_the_command_as_interrupted(monkeypatch, capsys,
                                                                                                  how):
    """Python prints and drops an exception raised in a weakref callback or a __del__ (a
    traceback on stderr): the command goes on to its end, then exits as interrupted, with
    nothing else on stderr."""
    monkeypatch.setattr(sys, "argv", ["cmd"])
    steps, before = [], (sys.unraisablehook, signal.getsignal(signal.SIGTERM))

    @command()
    def cli():
        getattr(Dropping, how)()
        steps.append("finished")

    with pytest.raises(SystemExit) as exit:
        run_command(cli)
    assert exit.value.code == 143 and capsys.readouterr().err == "interrupted\n"
    assert steps == ["finished"]
    assert (sys.unraisablehook, signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_finalizer_that_fails_after_a_signal_is_silent(monkeypatch, capsys):
    """A signal raised inside a constructor leaves a half-built object whose __del__ fails
    (tqdm's reads an attribute __init__ never set) once the frames are freed."""
    monkeypatch.setattr(sys, "argv", ["cmd"])

    class HalfBuilt:
        def __init__(self):
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(10000))  # the handler raises here
            self.position = 0

        def __del__(self):
            self.position += 1  # AttributeError: __init__ stopped first

    @command()
    def cli():
        HalfBuilt()

    with pytest.raises(SystemExit) as exit:
        run_command(cli)
    assert exit.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_what_a_library_logs_or_warns_about_the_interrupted_it_catches_is_silent(monkeypatch, capsys):
    """As torch does in export: its argument parsing turns the Interrupted into a TypeError, which
    its fake-tensor dispatcher logs with a traceback through a handler of its own, then raises.
    Only `interrupted` is printed; once the command is over, logging and warnings work again."""
    monkeypatch.setattr(sys, "argv", ["cmd"])
    library = logging.getLogger("creps-test-library")
    handler = logging.StreamHandler(sys.stderr)  # capsys's stderr
    monkeypatch.setattr(library, "handlers", [handler])
    monkeypatch.setattr(library, "propagate", False)

    @command()
    def cli():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(10000))  # the handler raises here
        except BaseException as exc:
            library.exception("dispatch failed")
            warnings.warn("dispatch failed", RuntimeWarning)
            raise TypeError(f"failed to unpack: {exc}") from exc

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        with pytest.raises(SystemExit) as exit:
            run_command(cli)
        assert warnings.filters == filters
    assert exit.value.code == 143 and capsys.readouterr().err == "interrupted\n"
    assert [str(w.message) for w in warned] == []
    library.error("after the command")
    assert capsys.readouterr().err == "after the command\n"
    with pytest.warns(RuntimeWarning, match="after the command"):
        warnings.warn("after the command", RuntimeWarning)


def test_an_unraisable_error_without_a_signal_is_still_reported(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cmd"])
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    class Broken:
        def __del__(self):
            raise ValueError("a bug in a finalizer")

    @command()
    def cli():
        Broken()

    run_command(cli)
    assert [type(r.exc_value) for r in reported] == [ValueError]


def test_a_console_script_ignores_a_signal_that_comes_after_its_work(monkeypatch, capsys):
    """Restored default handlers would let a late SIGTERM kill the process while it shuts down (exit -15)."""
    monkeypatch.setattr(sys, "argv", ["cmd"])
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    @command()
    def cli():
        click.echo("done")

    try:
        entry_point(cli)()  # returns: the command succeeded
        assert {s: signal.getsignal(s) for s in before} == {s: signal.SIG_IGN for s in before}
        os.kill(os.getpid(), signal.SIGTERM)  # ignored, as it is until the process exits
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert capsys.readouterr().out == "done\n"

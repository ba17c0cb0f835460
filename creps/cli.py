"""What every creps command shares: the command decorator, parameter types and the error
boundary (torch-free).

Library code raises typed errors (CrepsError and its kinds); `run_command` is the one
place that turns them, bad parameters and SIGINT/SIGTERM into one line on stderr and an
exit code.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import importlib.abc
import logging
import re
import signal
import sys
import threading
import warnings

import click

from creps import grid
from creps.errors import CrepsError

EXIT_ERROR = 1
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
# Packages whose import runs C++ that calls back into Python (torch's _C init does): an
# exception raised in such a callback cannot unwind through the C++ and ends the process in
# std::terminate, so a signal that comes while one is imported is raised once it is in.
NATIVE_IMPORTS = frozenset({"torch", "onnx", "onnxruntime", "onnxscript", "tensorrt", "cuda"})


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised in the main thread so that every `finally` on the way out
    runs (atomic_path removes its temporaries). A BaseException, as KeyboardInterrupt is, so
    no `except Exception` swallows it; not a KeyboardInterrupt, which click turns into a
    blank line and "Aborted!"."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class NativeImports(importlib.abc.MetaPathFinder):
    """On sys.meta_path: runs the main thread's import of a NATIVE_IMPORTS module (a package or
    one of its submodules, with all it imports in turn) through `exec_module` below, which
    counts it in `depth`; a signal the handler `hold`s meanwhile is raised when the import
    ends. Raised from exec_module, it would make the import machinery drop the module from
    sys.modules, and the next import would run it again (torch registers its operators twice);
    so `statement`, builtins.__import__ while installed, raises it once the outermost import
    statement has returned. An import by importlib.import_module with no statement around it
    gets it from exec_module."""

    def __init__(self):
        self.depth = 0  # native modules being executed
        self.statements = 0  # import statements under way in the main thread
        self.held: int | None = None
        self.loaders: dict[str, importlib.abc.Loader] = {}  # by module name, until exec_module
        self.main = threading.main_thread().ident
        self.builtin_import = builtins.__import__

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] not in NATIVE_IMPORTS or threading.get_ident() != self.main:
            return None
        finders = (f for f in sys.meta_path if f is not self and hasattr(f, "find_spec"))
        spec = next(filter(None, (f.find_spec(name, path, target) for f in finders)), None)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        self.loaders[name], spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.loaders[spec.name].create_module(spec)

    def exec_module(self, module):
        loader = self.loaders.pop(module.__spec__.name)
        module.__spec__.loader = module.__loader__ = loader  # the package sees its own loader
        self.depth += 1
        try:
            loader.exec_module(module)
        finally:
            self.depth -= 1
        if not self.statements:
            self.raise_held()

    def statement(self, *args, **kwargs):
        if threading.get_ident() != self.main:
            return self.builtin_import(*args, **kwargs)
        self.statements += 1
        try:
            return self.builtin_import(*args, **kwargs)
        finally:
            self.statements -= 1
            if not self.statements:
                self.raise_held()

    def raise_held(self) -> None:
        if not self.depth and self.held is not None:
            signum, self.held = self.held, None
            raise Interrupted(signum)

    def hold(self, signum: int) -> bool:
        """Keep `signum` for the end of the import under way, if one is."""
        if self.depth:
            self.held = signum
        return bool(self.depth)


@contextlib.contextmanager
def interrupts_raise(received: list[int] | None = None, restore: bool = True):
    """While inside: the first SIGINT or SIGTERM raises Interrupted in the main thread; later
    ones are ignored, so a second Ctrl-C cannot cut the cleanup short. Signals a parent left
    ignored (a shell's background job ignores SIGINT) stay ignored. The signal's number is
    appended to `received`, so a caller knows of it even when a library turned the
    Interrupted into an error of its own (torch.export wraps what its tracing raises).
    One that comes while a NATIVE_IMPORTS package is imported is raised when that import ends.
    From the first signal on, logging and warnings are off until the way out: what a library
    logs or warns about the Interrupted it catches is the signal's consequence (torch's
    fake-tensor dispatcher logs it with a traceback before raising an error of its own). On the
    way out logging and the warning filters are as they were and the previous handlers come
    back, or with `restore=False` (a process that ends with the command) signals are ignored
    from then on."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    raised = False
    imports = NativeImports()
    logging_off = logging.root.manager.disable  # the level logging.disable set, if any

    def handler(signum, frame):
        nonlocal raised
        if not raised:
            raised = True
            logging.disable(logging.CRITICAL)
            warnings.simplefilter("ignore")
            if received is not None:
                received.append(signum)
            if not imports.hold(signum):
                raise Interrupted(signum)

    previous = {signum: signal.getsignal(signum) for signum in INTERRUPTS}
    for signum, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(signum, handler)
    sys.meta_path.insert(0, imports)
    builtins.__import__ = imports.statement
    try:
        with warnings.catch_warnings():  # restores the filters the handler sets
            yield
    finally:
        logging.disable(logging_off)
        builtins.__import__ = imports.builtin_import
        sys.meta_path.remove(imports)
        for signum, old in previous.items():
            signal.signal(signum, old if restore else signal.SIG_IGN)


@contextlib.contextmanager
def quiet_unraisables(received: list[int]):
    """While inside: what Python drops and reports through sys.unraisablehook (an exception
    raised in a weakref callback, a __del__ or a gc callback) is dropped silently if it is the
    Interrupted of a signal that came while such a callback ran (the signal is in `received`:
    the command goes on to its end, then exits as interrupted), or if it comes after a
    signal (a half-built object's finalizer failing; a consequence, as in run_command).
    Anything else goes to the previous hook."""
    previous = sys.unraisablehook

    def hook(info):
        if not (isinstance(info.exc_value, Interrupted) or received):
            previous(info)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def command(**settings):
    """click.command for every creps command: -h as well as --help, and --version."""
    context = {"help_option_names": ["-h", "--help"], **settings.pop("context_settings", {})}

    def decorate(function) -> click.Command:
        cli = click.command(context_settings=context, **settings)(function)
        return click.version_option(package_name="creps", message="%(prog)s %(version)s")(cli)

    return decorate


def parse_memory(text: str) -> int:
    """'512M', '2G', '1.5G', '65536' -> bytes (K/M/G/T are powers of 1024). Raises ValueError."""
    match = re.fullmatch(r"\s*(\d+\.?\d*|\.\d+)\s*([KMGT]?)(I?B)?\s*", text.upper())
    value = float(match.group(1)) * 1024 ** " KMGT".index(match.group(2) or " ") if match else 0
    if value < 1:
        raise ValueError(f"memory {text!r} is not a positive size like 512M or 2G")
    return int(value)


class ParsedType(click.ParamType):
    """A click type backed by a parser of creps.grid or this module (ValueError -> click's usage error)."""

    def __init__(self, name: str, parse, parsed: type):
        self.name = name
        self.parse = parse
        self.parsed = parsed

    def convert(self, value, param, ctx):
        if isinstance(value, self.parsed):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = ParsedType("WxH", grid.parse_size, tuple)
SEEDS = ParsedType("SEEDS", grid.parse_seeds, list)
WINDOW = ParsedType("x0,y0,x1,y1", grid.parse_window, tuple)
MEMORY = ParsedType("BYTES", parse_memory, int)
FIT = click.Choice(grid.FITS)


def fail(message: str) -> None:
    """Print one line and exit non-zero."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(EXIT_ERROR)


def run_command(command: click.Command, quiet_interrupt: bool = False, restore_handlers: bool = True) -> None:
    """Run a click command with creps' error boundary: one line, non-zero exit, no traceback.

    SIGINT and SIGTERM alike: temporaries removed, `interrupted`, exit 128 + the signal
    (130, 143). `quiet_interrupt`: a child command whose parent says `interrupted` itself.
    `restore_handlers=False` (a console script, whose process ends with the command): a
    signal that comes once the work is done is ignored, rather than killing the process
    while it shuts down (exit 0: the outputs are complete).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    received: list[int] = []
    with quiet_unraisables(received):  # outside: the frames an exception holds are freed at the end of its except
        try:
            with interrupts_raise(received, restore=restore_handlers):
                command.main(standalone_mode=False)
        except Interrupted as exc:
            received[:] = received or [exc.signum]
        except BaseException as exc:
            if not received:  # after a signal, whatever came out of the command is its consequence
                report(exc)
    if received:  # out here, the interrupted frames are gone: their progress bars closed first
        if not quiet_interrupt:
            click.echo("interrupted", err=True)
        sys.exit(128 + received[0])


def report(exc: BaseException) -> None:
    """End the process for what a command raised: one line and EXIT_ERROR for the errors a
    user can act on, click's exit code for --help/--version; anything else is a bug and
    propagates with its traceback."""
    if isinstance(exc, click.exceptions.Exit):
        sys.exit(exc.exit_code)
    if isinstance(exc, click.exceptions.Abort):
        fail("aborted")
    if isinstance(exc, click.ClickException):
        fail(exc.format_message().replace("\n", " "))
    if isinstance(exc, CrepsError):
        fail(str(exc))
    if isinstance(exc, OSError):
        fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
    if isinstance(exc, MemoryError):
        fail("out of memory: use a smaller size, --tile or --max-memory")
    raise exc


def entry_point(command: click.Command):
    """`main = entry_point(cli)`: the console-script function for a click command."""
    return functools.partial(run_command, command, restore_handlers=False)

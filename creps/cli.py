"""What every creps command shares: parameter types and the error boundary (torch-free).

Library code raises typed errors (CrepsError and its kinds); `run_command` is the one
place that turns them, and bad parameters, into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import functools
import logging
import sys

import click

from creps import grid
from creps.errors import CrepsError

EXIT_ERROR = 1


class ParsedType(click.ParamType):
    """A click type backed by one of creps.grid's parsers (ValueError -> click's usage error)."""

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
FIT = click.Choice(grid.FITS)


def fail(message: str) -> None:
    """Print one line and exit non-zero."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(EXIT_ERROR)


def run_command(command: click.Command) -> None:
    """Run a click command with creps' error boundary: one line, non-zero exit, no traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        fail("aborted")
    except click.ClickException as exc:
        fail(exc.format_message().replace("\n", " "))
    except CrepsError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
    except KeyboardInterrupt:
        fail("interrupted")
    except MemoryError:
        fail("out of memory: use a smaller size, --tile or --max-memory")


def entry_point(command: click.Command):
    """`main = entry_point(cli)`: the console-script function for a click command."""
    return functools.partial(run_command, command)

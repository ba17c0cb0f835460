"""The command-line options creps-serve and `creps-run --dzi` share, stated once (click)."""

from __future__ import annotations

import click

from creps.cli import MEMORY
from creps.serve.pyramid import DEFAULT_DETAIL, DEFAULT_VIEWS, MAX_DETAIL, MIN_DETAIL
from creps.serve.tiles import DEFAULT_CACHE_BYTES


def canvas_options(function):
    """--canvas-views (-> `views`) and --detail (-> `detail`): Canvas.of(model, views, detail)."""
    function = click.option(
        "--detail", type=click.FloatRange(MIN_DETAIL, MAX_DETAIL), default=DEFAULT_DETAIL, show_default=True,
        help="The deepest level's pixel density, in times the trained density (rounded up to a power-of-two "
             "spacing).")(function)
    return click.option(
        "--canvas-views", "views", type=click.IntRange(1, 1024), default=DEFAULT_VIEWS, show_default=True,
        help="The canvas's width and height in trained views, centred on the trained view.")(function)


def cache_memory_option(function):
    """--cache-memory (-> `cache_memory`, bytes): the line cache's budget."""
    return click.option(
        "--cache-memory", type=MEMORY, default=DEFAULT_CACHE_BYTES, metavar="BYTES",
        help=f"Budget of the line cache (features of tile rows and columns), e.g. 512M, 2G "
             f"[default: {DEFAULT_CACHE_BYTES >> 20}M].")(function)

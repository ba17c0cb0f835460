"""`Runtime`: images of any size from a bundle, tiled, with numpy and a backend (never torch).

Per batch of images (from seeds, latents z, or ws past the mapping): `mapping` once,
`lines` in chunks of the coordinate vectors (the features of all H + W lines are kept:
B·32·R floats per line), then `pixels` tile by tile, band by band, each tile written
straight into the output: an array (`generate`) or PNG files streamed band by band
(`save`), so memory stays flat as the image grows. Chunks and tiles run as many at once
as the backend allows (`Backend.parallel`: one per core on ONNX Runtime CPU). A tile with
NaN or Inf is refused (NonFiniteError naming the image and the tile), never written as
black pixels.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from creps import grid
from creps.errors import CrepsError, NonFiniteError
from creps.files import atomic_path
from creps.runtime.backends import Backend, open_backend
from creps.runtime.bundle import Bundle, read_bundle
from creps.runtime.default import default_bundle
from creps.runtime.png import PngStream
from creps.runtime.stages import RUN_STAGES, carriers
from creps.runtime.tiling import UNLIMITED, Limits, Plan, make_plan

log = logging.getLogger(__name__)

OUTPUTS = ("uint8", "float")


def as_seeds(seeds: int | Sequence[int]) -> list[int]:
    seeds = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    if not seeds:
        raise CrepsError("no seeds given")
    for seed in seeds:
        if not 0 <= int(seed) < 2**32:
            raise CrepsError(f"seed {seed} is outside 0..2**32-1")
    return [int(s) for s in seeds]


def as_latents(name: str, values, shape: tuple[int, ...]) -> np.ndarray:
    """An app's z (N, z_dim) or ws (N, num_ws, w_dim) as float32, checked against the model's `shape`."""
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise CrepsError(f"{name} is not an array of numbers") from None
    if array.ndim != 1 + len(shape) or array.shape[1:] != shape or len(array) == 0:
        want = ", ".join(map(str, shape))
        raise CrepsError(f"{name} has shape {list(array.shape)}; this bundle's model takes [N, {want}], N >= 1")
    if not np.isfinite(array).all():
        raise CrepsError(f"{name} has NaN or Inf values")
    return array


@dataclass(frozen=True)
class Batch:
    """The images of one run of the graphs: a label each (for messages) and their z, or ws past the mapping."""

    labels: list[str]
    z: np.ndarray | None = None  # (n, z_dim)
    ws: np.ndarray | None = None  # (n, num_ws, w_dim)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, part: slice) -> Batch:
        return Batch(self.labels[part], *(None if a is None else a[part] for a in (self.z, self.ws)))


def check_finite(img: np.ndarray, batch: Batch, band: slice, column: slice) -> None:
    """Refuse a tile (N, 3, h, w) holding NaN or Inf: written out, it would be black pixels."""
    finite = np.isfinite(img).reshape(len(img), -1).all(axis=1)  # (N,)
    if not finite.all():
        raise NonFiniteError(
            f"{batch.labels[int(np.argmin(finite))]}: the pixels graph gave NaN or Inf in the tile x "
            f"{column.start}-{column.stop - 1}, y {band.start}-{band.stop - 1}; the bundle does not compute "
            "finite images (weights that are not finite, or an overflow); no image written"
        )


def limits_of(backend: Backend) -> Limits:
    """The extents a backend accepts: per dynamic axis, those every input carrying it accepts."""

    def extent(axis: str, *in_stages: str) -> tuple[int, int]:
        given = [ranges[dim] for stage in in_stages for name, dim in carriers(stage, axis)
                 if (ranges := backend.shape_range(stage, name)) is not None]
        return (max(e[0] for e in given), min(e[1] for e in given)) if given else UNLIMITED

    return Limits(batch=extent("batch", *RUN_STAGES),
                  line_height=extent("height", "lines"), line_width=extent("width", "lines"),
                  tile_height=extent("height", "pixels"), tile_width=extent("width", "pixels"))


def in_order(run, items, workers: int) -> Iterator:
    """run(item) for every item, up to `workers` at once on a thread pool; results in order.

    At most 2·workers results wait, so the consumer (writing tiles out) bounds memory. If the
    consumer stops early (an error, an interrupt), calls not yet started are cancelled.
    """
    if workers == 1:
        yield from map(run, items)
        return
    pool = ThreadPoolExecutor(workers)
    try:
        pending = deque()
        for item in items:
            pending.append(pool.submit(run, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Runtime:
    """A loaded bundle and a backend.

    `bundle_dir`: a bundle folder, or None for the bundled default model (exported into
    the user cache on first use, as `creps-run` does; that first export needs PyTorch).
    `backend`: "auto" | "ort-cpu" | "ort-cuda" | "tensorrt", or a `Backend` object.
    `tile`: (width, height) of a pixel tile (default: the fastest measured on the CPU,
    or a TensorRT profile's largest tile; shrunk to `max_memory`). `max_memory`: bytes
    for line features and activations (see `creps.runtime.tiling`). `threads`: CPU
    threads (default: all cores this process may use). `line_chunk`: lines (ys + xs) per
    run of the lines graph (default: as the tile, the CPU's fastest or the profile's
    largest; shrunk to `max_memory`). `allow_engine_host_code`: run version-compatible
    TensorRT engines, which carry executable host code (only engines matching the manifest's
    sha256; see creps.runtime.trt). `precision`: "fp32", "fp16", "int8" or "auto"
    (creps.runtime.precision: auto takes the backend's fastest whose recorded error meets
    the bundle's bar), default as exported (fp32 graphs on ONNX Runtime, the engines' own
    precision on TensorRT); a precision the bundle lacks is refused with the command that
    makes it. `contexts`: TensorRT execution contexts per engine (calls run at once, as
    many; each takes its own activation memory); ONNX Runtime ignores it.

    A context manager: `close()` (or leaving `with Runtime(...) as runtime:`) closes a
    backend it opened by name; a `Backend` object passed in stays the caller's to close.
    """

    def __init__(self, bundle_dir: str | os.PathLike | None = None, backend: str | Backend = "auto",
                 tile: tuple[int, int] | None = None, max_memory: int | None = None, threads: int | None = None,
                 line_chunk: int | None = None, allow_engine_host_code: bool = False, precision: str | None = None,
                 contexts: int = 1):
        if not isinstance(backend, (str, Backend)):
            raise CrepsError(f"backend {backend!r} is neither a backend name nor a creps.runtime.backends.Backend")
        self.bundle: Bundle = read_bundle(default_bundle() if bundle_dir is None else bundle_dir)
        self.model = self.bundle.model
        self.owns_backend = isinstance(backend, str)
        self.backend: Backend = (open_backend(self.bundle, backend, threads, allow_engine_host_code, precision, contexts)
                                 if self.owns_backend else backend)
        self.limits = limits_of(self.backend)
        self.tile = tile
        self.max_memory = max_memory
        self.line_chunk = line_chunk
        log.info("bundle %s on backend %s, %s", self.bundle.path, self.backend.name, self.backend.precision)

    def close(self) -> None:
        """Free the backend's resources if this runtime opened it (idempotent)."""
        if self.owns_backend:
            self.backend.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def precision(self) -> str:
        """The precision of the lines and pixels graphs in use (what "auto" chose)."""
        return self.backend.precision

    @property
    def backend_name(self) -> str:
        """The backend in use: "ort-cpu", "ort-cuda" or "tensorrt" (what "auto" chose), or a given one's name."""
        return self.backend.name

    def plan(self, size: tuple[int, int], batch: int = 1) -> Plan:
        width, height = size
        try:
            grid.check_size(width, height)
        except ValueError as exc:
            raise CrepsError(str(exc)) from None
        workers = max(self.backend.parallel("lines"), self.backend.parallel("pixels"))
        return make_plan(self.model, width, height, batch, self.tile, self.max_memory, self.line_chunk, self.limits,
                         workers)

    def z(self, seeds: int | Sequence[int]) -> np.ndarray:
        """The seeds' latents (N, z_dim): the original's RandomState(seed).randn(1, z_dim)."""
        return np.concatenate([grid.seed_to_z(seed, self.model["z_dim"]) for seed in as_seeds(seeds)])

    def mapping(self, z: np.ndarray, psi: float = 1.0) -> np.ndarray:
        """The mapping graph: latents z (N, z_dim) -> ws (N, num_ws, w_dim), truncated by psi."""
        z = as_latents("z", z, (self.model["z_dim"],))
        return self.backend.run("mapping", {"z": z, "psi": np.array([psi], np.float32)})["ws"]

    def lines(self, ws: np.ndarray, ys: np.ndarray, xs: np.ndarray, plan: Plan,
              bar=None) -> tuple[np.ndarray, np.ndarray]:
        """Line features of the whole image, chunk by chunk: cols (N, B, 32, H, R), rows (N, B, 32, W, R)."""
        N, B, C, R = len(ws), self.model["num_blocks"], self.model["biline_channels"], self.model["rank"]
        cols = np.empty((N, B, C, len(ys), R), np.float32)
        rows = np.empty((N, B, C, len(xs), R), np.float32)
        feeds = ({"ws": ws, "ys": ys[chunk.ys], "xs": xs[chunk.xs]} for chunk in plan.line_chunks)
        for chunk, out in zip(plan.line_chunks, self.run_all("lines", feeds)):
            if not chunk.pad_ys:
                cols[:, :, :, chunk.ys] = out["cols"]
            if not chunk.pad_xs:
                rows[:, :, :, chunk.xs] = out["rows"]
            if bar is not None:
                bar.update()
        return cols, rows

    def tiles(self, batch: Batch, size, psi, window, fit, plan: Plan, bar) -> Iterator[tuple]:
        """(rows slice, cols slice, img tile (N, 3, h, w)) for the whole image, band by band."""
        ys, xs = grid.coords(*size, window=window, fit=fit)  # (H,), (W,)
        ws = self.mapping(batch.z, psi) if batch.ws is None else batch.ws  # (N, num_ws, w_dim)
        cols, rows = self.lines(ws, ys, xs, plan, bar)
        yield from self.pixels(batch, ws, cols, rows, plan, bar)

    def pixels(self, batch: Batch, ws: np.ndarray, cols: np.ndarray, rows: np.ndarray, plan: Plan,
               bar=None) -> Iterator[tuple]:
        """The pixels stage over `plan`'s tiles from ws (N, num_ws, w_dim) and the image's line
        features cols (N, B, 32, H, R), rows (N, B, 32, W, R): (rows slice, cols slice, img tile
        (N, 3, h, w)), band by band; a tile with NaN or Inf is refused (NonFiniteError)."""
        tiles = list(plan.tiles())
        feeds = ({"ws": ws, "cols": cols[:, :, :, band], "rows": rows[:, :, :, column]} for band, column in tiles)
        for (band, column), out in zip(tiles, self.run_all("pixels", feeds)):
            if bar is not None:
                bar.update()
            check_finite(out["img"], batch, band, column)
            yield band, column, out["img"]

    def run_all(self, stage: str, calls: Iterator[dict]) -> Iterator[dict]:
        """The outputs of many calls of one stage, in order: through the backend's
        `run_stream` (which may pipeline them) when it takes one call at a time, else up to
        `parallel(stage)` calls at once."""
        workers = self.backend.parallel(stage)
        if workers == 1:
            return self.backend.run_stream(stage, calls)
        return in_order(lambda feeds: self.backend.run(stage, feeds), calls, workers)

    def images(self, seeds, z, ws, psi) -> Batch:
        """The request's images as one Batch: from seeds (default: seed 0), z or ws, exactly one."""
        given = [name for name, value in (("seeds", seeds), ("z", z), ("ws", ws)) if value is not None]
        if len(given) > 1:
            raise CrepsError(f"{' and '.join(given)} given: pass one of seeds, z or ws")
        if ws is not None:
            if psi != 1.0:
                raise CrepsError(f"psi {psi} with ws: truncation happens in the mapping, before ws (pass z instead)")
            ws = as_latents("ws", ws, (self.model["num_ws"], self.model["w_dim"]))
            return Batch([f"image {i}" for i in range(len(ws))], ws=ws)
        if z is not None:
            z = as_latents("z", z, (self.model["z_dim"],))
            return Batch([f"image {i}" for i in range(len(z))], z=z)
        seeds = as_seeds(0 if seeds is None else seeds)
        return Batch([f"seed {seed}" for seed in seeds], z=self.z(seeds))

    def prepare(self, seeds=None, size=None, psi: float = 1.0, fit: str = "extend", batch: int = 1, *, z=None,
                ws=None) -> tuple[tuple[int, int], list[tuple[Batch, Plan]]]:
        """Check a request before any work: (size, [(a batch of its images, that batch's plan), ...])."""
        size = size or (self.model["img_resolution"],) * 2
        if batch < 1:
            raise CrepsError(f"batch {batch} must be at least 1")
        if not np.isfinite(psi):
            raise CrepsError(f"truncation psi {psi} is not a finite number")
        if fit not in grid.FITS:
            raise CrepsError(f"fit {fit!r} is not one of {', '.join(grid.FITS)}")
        every = self.images(seeds, z, ws, psi)
        parts = [every[start:start + batch] for start in range(0, len(every), batch)]
        return size, [(part, self.plan(size, len(part))) for part in parts]

    @staticmethod
    def progress(schedule, enabled: bool):
        """One bar over every line chunk and pixel tile of the request."""
        total = sum(len(plan.line_chunks) + len(plan.bands) * len(plan.columns) for _, plan in schedule)
        return tqdm(total=total, unit="step", desc="line chunks + tiles", disable=not enabled, leave=False)

    def generate(self, seeds: int | Sequence[int] | None = None, size: tuple[int, int] | None = None,
                 psi: float = 1.0, window: grid.Window | None = None, fit: str = "extend", out: str = "uint8",
                 batch: int = 1, progress: bool = False, *, z=None, ws=None) -> np.ndarray:
        """Images at `size` = (width, height) (default: the training resolution), one per seed
        (default seed 0), or per row of latents `z` (N, z_dim), or of `ws` (N, num_ws, w_dim)
        past the mapping (`self.mapping(z, psi)`; psi must then stay 1): one of the three.

        Returns uint8 (N, H, W, 3) as the original writes them, or float32 (N, 3, H, W).
        """
        if out not in OUTPUTS:
            raise CrepsError(f"out {out!r} is not one of {', '.join(OUTPUTS)}")
        size, schedule = self.prepare(seeds, size, psi, fit, batch, z=z, ws=ws)
        width, height = size
        count = sum(len(part) for part, _ in schedule)
        shape = (count, height, width, 3) if out == "uint8" else (count, 3, height, width)
        images = np.empty(shape, np.uint8 if out == "uint8" else np.float32)
        with self.progress(schedule, progress) as bar:
            done = 0
            for part, plan in schedule:
                target = images[done:done + len(part)]
                for band, column, img in self.tiles(part, size, psi, window, fit, plan, bar):
                    if out == "uint8":
                        target[:, band, column] = grid.to_uint8(img)  # (N, h, w, 3)
                    else:
                        target[:, :, band, column] = img  # (N, 3, h, w)
                done += len(part)
        return images

    def save(self, paths: Sequence[str | os.PathLike], seeds: int | Sequence[int] | None = None,
             size: tuple[int, int] | None = None, psi: float = 1.0, window: grid.Window | None = None,
             fit: str = "extend", batch: int = 1, progress: bool = False, *, z=None, ws=None) -> None:
        """Stream one PNG per image (seeds, z or ws, as `generate`) to `paths`, band by band;
        each file appears complete or not at all."""
        size, schedule = self.prepare(seeds, size, psi, fit, batch, z=z, ws=ws)
        count = sum(len(part) for part, _ in schedule)
        if len(paths) != count:
            raise CrepsError(f"{len(paths)} output paths for {count} images")
        width, _ = size
        with self.progress(schedule, progress) as bar:
            done = 0
            for part, plan in schedule:
                with contextlib.ExitStack() as stack:
                    streams = []
                    for path in paths[done:done + len(part)]:
                        tmp = stack.enter_context(atomic_path(Path(path)))
                        streams.append(PngStream(stack.enter_context(open(tmp, "wb")), *size))
                    band_pixels = np.empty((len(part), plan.tile[1], width, 3), np.uint8)  # (N, h, W, 3)
                    for band, column, img in self.tiles(part, size, psi, window, fit, plan, bar):
                        band_pixels[:, :band.stop - band.start, column] = grid.to_uint8(img)
                        if column.stop == width:
                            for stream, pixels in zip(streams, band_pixels):
                                stream.write(pixels[:band.stop - band.start])
                    for stream in streams:
                        stream.close()
                done += len(part)

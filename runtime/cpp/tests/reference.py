"""The Python runtime's answers for the C++ unit tests, written at test time into SCRATCH (never committed):
numpy's seeds, creps.grid's coordinates, creps.runtime.tiling's plans, a tiny exported bundle with the
images and refusals of creps.runtime.Runtime, and the stage contract. Usage: reference.py SCRATCH
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

from creps import grid
from creps.errors import BundleError, CrepsError
from creps.runtime import Runtime, stages
from creps.runtime.bundle import sha256_file
from creps.runtime.cpu import int8_kernel_class
from creps.runtime.tiling import UNLIMITED, Limits, make_plan

TINY = dict(z_dim=32, w_dim=32, img_resolution=16, mapping_layers=2, channel_base=512, channel_max=32, rank=4)
PUBLISHED = {"num_blocks": 6, "biline_channels": 32, "rank": 8, "img_channels": 3, "channel_base": 65536,
             "channel_max": 1024}


def bits(values) -> list[int]:
    return np.ascontiguousarray(values, np.float32).view(np.uint32).ravel().tolist()


def seeds() -> list[dict]:
    cases = []
    for seed in [0, 1, 2, 3, 7, 42, 123, 1000, 65535, 65536, 123456789, 2**31 - 1, 2**31, 2**32 - 1]:
        for z_dim in [1, 2, 3, 17, 512, 625, 1249]:  # 625 and 1249 draw past one MT19937 state (624 words)
            cases.append({"seed": seed, "z_dim": z_dim, "z": bits(grid.seed_to_z(seed, z_dim))})
    return cases


def coords() -> list[dict]:
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 2), (16, 16), (37, 23), (512, 512), (2048, 512), (512, 2048),
             (1000, 3), (8192, 2048), (1, 4096)]
    windows = [None, (0.0, 0.0, 1.0, 1.0), (0.25, 0.25, 0.75, 0.75), (-1.5, 2.5, 2.5, -1.5),
               (0.1, 0.2, 0.1, 0.2), (1e-300, -1e-300, 3e-300, 5e-324)]
    windows += [tuple(rng.uniform(-10, 10, 4)) for _ in range(4)]
    cases = []
    for width, height in sizes:
        for window in windows:
            for fit in grid.FITS:
                ys, xs = grid.coords(width, height, window=window, fit=fit)
                cases.append({"width": width, "height": height, "window": window, "fit": fit,
                              "ys": bits(ys), "xs": bits(xs)})
    cases += endpoint_cases()
    for width, height in [(0, 5), (5, 0), (-3, 4), (2**20 + 1, 1), (65537, 65536)]:
        try:
            grid.check_size(width, height)
        except ValueError as exc:
            cases.append({"width": width, "height": height, "error": str(exc)})
    return cases


def endpoint_cases() -> list[dict]:
    """Windows whose last coordinate shows numpy's rule that linspace ends exactly at stop: stop a float32
    tie (1 + 2**-24) that the stepped float64 value misses by an ulp, so the two round apart."""
    stop, cases = 1 + 2**-24, []
    for start in np.linspace(-3, 0.9, 400):
        for n in range(3, 40):
            stepped = (n - 1) * ((stop - start) / (n - 1)) + start
            if np.float32(stepped) != np.float32(stop) and len(cases) < 4:
                window = (float(start), float(start), stop, stop)
                ys, xs = grid.coords(n, n, window=window)
                cases.append({"width": n, "height": n, "window": window, "fit": "extend", "ys": bits(ys),
                              "xs": bits(xs)})
    assert cases, "no window shows the endpoint rule"
    return cases


def plans(tiny_model: dict) -> list[dict]:
    rng = np.random.default_rng(1)
    models = [tiny_model, PUBLISHED]
    sizes = [(1, 1), (1, 4096), (4096, 1), (16, 16), (37, 23), (512, 512), (2048, 512), (8192, 2048), (300, 7)]
    limits = [Limits(), Limits(batch=(1, 4), line_height=(1, 512), line_width=(1, 512), tile_height=(1, 128),
                               tile_width=(1, 256)),
              Limits(batch=(2, 8), line_height=(4, 64), line_width=(4, 96), tile_height=(8, 64), tile_width=(8, 64))]
    cases = []
    for _ in range(400):
        model = models[rng.integers(len(models))]
        width, height = sizes[rng.integers(len(sizes))]
        batch = int(rng.choice([1, 2, 3, 8]))
        tile = [None, (16, 8), (1000, 1000), (128, 64), (0, 3), (1, 1)][rng.integers(6)]
        memory = [None, 1 << 20, 64 << 20, 512 << 20, 5000, int(rng.integers(1 << 16, 1 << 28))][rng.integers(6)]
        limit = limits[rng.integers(len(limits))]
        workers = int(rng.integers(1, 5))
        case = {"model": {k: model[k] for k in PUBLISHED}, "width": width, "height": height, "batch": batch,
                "tile": tile, "max_memory": memory, "workers": workers,
                "limits": {k: list(getattr(limit, k)) for k in ("batch", "line_height", "line_width",
                                                                 "tile_height", "tile_width")}}
        try:
            plan = make_plan(model, width, height, batch, tile, memory, None, limit, workers)
        except CrepsError as exc:
            case["error"] = str(exc)
        else:
            case["chunks"] = [[c.ys.start, c.ys.stop, c.xs.start, c.xs.stop, c.pad_ys, c.pad_xs]
                              for c in plan.line_chunks]
            case["bands"] = [[s.start, s.stop] for s in plan.bands]
            case["columns"] = [[s.start, s.stop] for s in plan.columns]
            case["estimated"] = plan.estimated_bytes
        cases.append(case)
    assert UNLIMITED == (1, 1 << 62)
    return cases


def tiny_bundle(scratch: Path) -> Path:
    bundle = scratch / "tiny"
    if not (bundle / "manifest.json").is_file():
        sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
        from tiny_models import random_generator  # the test suite's fully randomised tiny generator

        from creps.export import export_bundle
        from creps.model import GeneratorConfig

        export_bundle(random_generator(GeneratorConfig(**TINY)), scratch / "tiny.tmp", verify=False)
        (scratch / "tiny.tmp").rename(bundle)
    return bundle


# (label, request): what the C++ test asks its Runtime, Python's Runtime asked the same.
IMAGE_REQUESTS = [
    ("three seeds, batch 2, small tiles", dict(seeds=[0, 1, 2], size=(37, 23), psi=0.7, batch=2, tile=(16, 8))),
    ("one row", dict(seeds=[5], size=(1, 17))),
    ("one column", dict(seeds=[7], size=(19, 1))),
    ("training size", dict(seeds=[4294967295])),
    ("window, stretch, 2 threads", dict(seeds=[3, 9], size=(40, 10), psi=0.5, window=(0.2, -0.3, 0.9, 1.4),
                                        fit="stretch", threads=2)),
    ("wide extend, memory budget", dict(seeds=[11], size=(96, 13), max_memory=200_000, threads=3, batch=1)),
]


def run_request(bundle: Path, request: dict, z=None, ws=None):
    options = {k: request[k] for k in ("tile", "max_memory", "threads") if k in request}
    with Runtime(bundle, backend="ort-cpu", **options) as runtime:
        args = {k: request[k] for k in ("size", "psi", "window", "fit", "batch") if k in request}
        if z is not None:
            return runtime.generate(z=z, **args)
        if ws is not None:
            return runtime.generate(ws=ws, **args)
        return runtime.generate(request["seeds"], **args)


def images(bundle: Path, scratch: Path) -> list[dict]:
    folder = scratch / "images"
    folder.mkdir(exist_ok=True)
    cases = []
    for i, (label, request) in enumerate(IMAGE_REQUESTS):
        pixels = run_request(bundle, request)
        (folder / f"{i}.rgb").write_bytes(pixels.tobytes())
        cases.append({"label": label, **request, "file": f"images/{i}.rgb", "count": len(pixels)})
    with Runtime(bundle, backend="ort-cpu", threads=1) as runtime:
        z = runtime.z([3, 4])
        blend = (z[:1] + z[1:]) / 2  # an app's own latent
        ws = runtime.mapping(z, psi=0.6)
    for label, kind, values in (("blended z", "z", blend), ("ws past the mapping", "ws", ws)):
        pixels = run_request(bundle, {"size": (21, 12)}, **{kind: values})
        file = f"images/{kind}.rgb"
        (scratch / file).write_bytes(pixels.tobytes())
        cases.append({"label": label, "size": (21, 12), kind: bits(values), "file": file, "count": len(pixels)})
    cases.append({"label": "mapping", "mapping_z": bits(z), "psi": 0.6, "ws": bits(ws)})
    return cases


def message(call) -> str:
    try:
        call()
    except CrepsError as exc:
        return str(exc)
    raise AssertionError(f"{call} was not refused")


def request_refusals(bundle: Path) -> list[dict]:
    """Requests that the runtime refuses, and the line it refuses each with."""
    runtime = Runtime(bundle, backend="ort-cpu", threads=1)
    requests = [dict(seeds=[0], batch=0), dict(seeds=[0], psi=float("nan")), dict(seeds=[0], psi=float("inf")),
                dict(seeds=[0], fit="zoom"), dict(seeds=[-1]), dict(seeds=[2**32]), dict(seeds=[]),
                dict(seeds=[0], size=(0, 5)), dict(seeds=[0], size=(2**20 + 1, 1)),
                dict(ws_rows=1, psi=0.7), dict(z_values=31), dict(z_values=0), dict(ws_values=7 * 32 + 1),
                dict(seeds=[0, 1], paths=1), dict(seeds=[0], tile=(0, 3)), dict(seeds=[0], max_memory=5000),
                dict(seeds=[0], tile=(64, 64), max_memory=40_000), dict(z_nan=True)]
    cases = []
    for request in requests:
        r = request
        args = {k: r[k] for k in ("size", "psi", "fit", "batch") if k in r}
        if "tile" in r or "max_memory" in r:
            target = Runtime(bundle, backend="ort-cpu", threads=1, tile=r.get("tile"), max_memory=r.get("max_memory"))
        else:
            target = runtime
        if "ws_rows" in r:
            call = lambda: target.generate(ws=np.zeros((1, 7, 32), np.float32), **args)
        elif "z_values" in r:
            call = lambda: target.generate(z=np.zeros((r["z_values"],), np.float32)[None] if r["z_values"] else
                                           np.zeros((0,), np.float32), **args)
        elif "ws_values" in r:
            call = lambda: target.generate(ws=np.zeros((1, r["ws_values"]), np.float32), **args)
        elif "z_nan" in r:
            call = lambda: target.generate(z=np.full((1, 32), np.nan, np.float32), **args)
        elif "paths" in r:
            call = lambda: target.save(["x.png"] * r["paths"], r["seeds"], **args)
        else:
            call = lambda: target.generate(r["seeds"], **args)
        if not math.isfinite(r.get("psi", 1.0)):
            r["psi"] = repr(r["psi"])  # JSON has no NaN: the C++ test reads the repr
        cases.append({**r, "message": message(call)})
    return cases


def nonfinite(bundle: Path) -> str:
    """The line for ws of 3e38: finite input, the graphs overflow."""
    with Runtime(bundle, backend="ort-cpu", threads=1) as runtime:
        return message(lambda: runtime.generate(ws=np.full((1, 7, 32), 3e38, np.float32), size=(8, 4)))


def edit(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def bundle_refusals(bundle: Path, scratch: Path) -> list[dict]:
    """Copies of the bundle, each broken one way, and the line Runtime(copy) refuses it with."""
    def graph(name):
        return lambda m: m["graphs"][name]

    changes = {
        "future version": lambda m: m.update(format_version=3),
        "version 1.0": lambda m: m.update(format_version=1.0),
        "version true": lambda m: m.update(format_version=True),
        "not creps": lambda m: m.update(format="other-bundle"),
        "long format": lambda m: m.update(format="x" * 100),
        "stages edited": lambda m: m["stages"]["lines"]["inputs"][1].update(axes=["width"]),
        "stages int as float": lambda m: m["stages"]["mapping"]["inputs"][1].update(axes=[1.0]),
        "stages lack pixels": lambda m: m["stages"].pop("pixels"),
        "stages extra": lambda m: m["stages"].update(extra={}),
        "stages missing": lambda m: m.pop("stages"),
        "stages not a list": lambda m: m["stages"]["mapping"].update(inputs={}),
        "version 1 with bad stages": lambda m: (m.update(format_version=1), m["stages"].pop("generator")),
        "no model": lambda m: m.pop("model"),
        "unknown model field": lambda m: m["model"].update(zdim=3, aaa=1),
        "missing model fields": lambda m: (m["model"].pop("rank"), m["model"].pop("z_dim")),
        "z_dim string": lambda m: m["model"].update(z_dim="32"),
        "z_dim bool": lambda m: m["model"].update(z_dim=True),
        "z_dim float": lambda m: m["model"].update(z_dim=32.0),
        "z_dim big": lambda m: m["model"].update(z_dim=2**31),
        "z_dim list": lambda m: m["model"].update(z_dim=[32]),
        "z_dim object": lambda m: m["model"].update(z_dim={"z": "é\n"}),
        "blocks empty": lambda m: m["model"].update(blocks=[]),
        "cutoff negative": lambda m: m["model"].update(truncation_cutoff=-1),
        "cutoff too big": lambda m: m["model"].update(truncation_cutoff=10),
        "blocks count": lambda m: m["model"].update(blocks=[8, 16, 32]),
        "resolution": lambda m: m["model"].update(img_resolution=33),
        "blocks values": lambda m: m["model"].update(blocks=[8, 17]),
        "z_dim edited": lambda m: m["model"].update(z_dim=64),
        "rank edited": lambda m: m["model"].update(rank=8),
        "no graphs": lambda m: m.update(graphs={}),
        "engines list": lambda m: m.update(engines=[]),
        "entry not object": lambda m: m["graphs"].update(extra=[1]),
        "precision list": lambda m: graph("lines")(m).update(precision=["fp32"]),
        "precision unknown": lambda m: graph("lines")(m).update(precision="fp8"),
        "file with slash": lambda m: graph("lines")(m).update(file="../lines.onnx"),
        "file empty": lambda m: graph("lines")(m).update(file=""),
        "file hidden": lambda m: graph("lines")(m).update(file=".lines.onnx"),
        "sha256 missing": lambda m: graph("lines")(m).pop("sha256"),
        "unknown stage": lambda m: graph("lines")(m).update(stage="lens"),
        "stage list": lambda m: graph("lines")(m).update(stage=["lines"]),
        "key mismatch": lambda m: graph("lines")(m).update(precision="fp16"),
        "cols rank": lambda m: graph("lines")(m)["outputs"][0].update(shape=["batch", 2, 32, "height"]),
        "cols dtype": lambda m: graph("lines")(m)["outputs"][0].update(dtype="float16"),
        "batch fixed": lambda m: graph("mapping")(m)["inputs"][0]["shape"].__setitem__(0, 1),
        "batch empty name": lambda m: graph("mapping")(m)["inputs"][0]["shape"].__setitem__(0, ""),
        "psi shape": lambda m: graph("mapping")(m)["inputs"][1].update(shape=[2]),
        "input renamed": lambda m: graph("pixels")(m)["inputs"][0].update(name="w"),
        "input name int": lambda m: graph("pixels")(m)["inputs"][0].update(name=5),
        "outputs missing": lambda m: graph("pixels")(m).pop("outputs"),
        "z_dim with the shapes": lambda m: (m["model"].update(z_dim=33),
                                            graph("mapping")(m)["inputs"][0]["shape"].__setitem__(1, 33)),
        "no pixels graph": lambda m: m["graphs"].pop("pixels"),
    }
    texts = {"truncated": b"{truncated", "not an object": b"[]", "bad utf-8": b"\xff\xfe{}",
             "version float text": b'{"format": "creps-bundle", "format_version": 1.0}',
             "too deep": b"[" * 100000 + b"]" * 100000}
    root = scratch / "refused"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    cases = []

    def case(label, prepare, prefix=False):
        folder = root / f"{len(cases)}"
        shutil.copytree(bundle, folder)
        prepare(folder)
        cases.append({"label": label, "dir": str(folder), "prefix": prefix,
                      "message": message(lambda: Runtime(folder, backend="ort-cpu", threads=1))})

    for label, change in changes.items():
        case(label, lambda folder: edit(folder, change))
    for label, text in texts.items():  # the decoder's own words differ: compared up to them
        case(label, lambda folder: (folder / "manifest.json").write_bytes(text),
             prefix=label in ("truncated", "bad utf-8", "too deep"))
    case("missing graph file", lambda folder: (folder / "lines.onnx").unlink())
    case("altered graph file", lambda folder: (folder / "pixels.onnx").write_bytes(b"altered"))
    case("no manifest", lambda folder: (folder / "manifest.json").unlink())

    def unloadable(folder):  # listed with its true hash: only ONNX Runtime can tell
        (folder / "pixels.onnx").write_bytes(b"not an onnx graph")
        edit(folder, lambda m: m["graphs"]["pixels"].update(sha256=sha256_file(folder / "pixels.onnx")))
    case("unloadable graph", unloadable)
    for label, precision in (("unknown precision", "bf16"), ("no int8 graphs", "int8")):
        cases.append({"label": label, "dir": str(bundle), "prefix": False, "precision": precision,
                      "message": message(lambda: Runtime(bundle, backend="ort-cpu", precision=precision))})
    cases.append({"label": "no folder", "dir": str(root / "absent/"), "prefix": False,
                  "message": message(lambda: Runtime(root / "absent/", backend="ort-cpu"))})
    try:  # where this onnxruntime has no CUDA provider (the CPU wheel), both runtimes refuse ort-cuda alike
        Runtime(bundle, backend="ort-cuda").close()
    except CrepsError as exc:
        cases.append({"label": "no CUDA provider", "dir": str(bundle), "prefix": False, "backend": "ort-cuda",
                      "message": str(exc)})
    cases.append({"label": "unknown backend", "dir": str(bundle), "prefix": False, "backend": "onnx",
                  "message": message(lambda: Runtime(bundle, backend="onnx"))})
    return cases


def with_precision(bundle: Path, folder: Path, precision: str, error: dict, bar: dict, fields: dict) -> Path:
    """A copy whose lines and pixels graphs also come as `precision` (the fp32 files under other names),
    with `error` recorded against `bar` and `fields` ({stage: entry fields}) besides: what `auto` chooses from."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(bundle, folder)

    def change(m):
        for stage in ("lines", "pixels"):
            entry = dict(m["graphs"][stage], precision=precision, file=f"{stage}.{precision}.onnx",
                         measured_error=error, **fields.get(stage, {}))
            shutil.copy(folder / f"{stage}.onnx", folder / entry["file"])
            m["graphs"][f"{stage}.{precision}"] = entry
        m.setdefault("verification", {})["precision"] = {"bars": {precision: bar}}
    edit(folder, change)
    return folder


def timed(speedup=1.5, **where) -> dict:
    """A stage's cpu_speedup as creps-calib records it: timed on this CPU, or `where`."""
    return {"cpu_speedup": {"speedup": speedup, **int8_kernel_class(), "cores": 2, **where}}


def both(**fields) -> dict:
    return {"lines": fields, "pixels": fields}


FLOAT_BAR = {"psnr_db": 40.0, "max_abs": 0.1}
UINT8_BAR = {"uint8_psnr_db": 45.0, "max_abs": 0.25}  # as creps-calib records the int8 bar
GOOD = {"uint8_psnr_db": 50.0, "max_abs": 0.1}
PRECISION_CASES = [  # (precision, recorded error, recorded bar, graph entry fields)
    ("int8", {"psnr_db": None, "max_abs": 0.0}, FLOAT_BAR, both(**timed())),
    ("int8", {"psnr_db": None, "max_abs": 0.5}, FLOAT_BAR, both(**timed())),
    ("fp16", {"psnr_db": None, "max_abs": 0.0}, FLOAT_BAR, {}),
    ("int8", GOOD, UINT8_BAR, both(**timed())), ("int8", GOOD, UINT8_BAR, {}),  # no timing: not for auto
    ("int8", {"uint8_psnr_db": 44.0, "max_abs": 0.1}, UINT8_BAR, both(**timed())),
    ("int8", GOOD, {"ssim": 0.9}, both(**timed())),  # a bar this creps does not know
    ("int8", {"max_abs": 0.1}, UINT8_BAR, both(**timed())),  # a figure the bar names, not recorded
    ("int8", GOOD, UINT8_BAR, both(**timed(0.9))), ("int8", GOOD, UINT8_BAR, both(**timed(True))),
    ("int8", GOOD, UINT8_BAR, both(**timed(cpu="Another CPU"))),
    ("int8", GOOD, UINT8_BAR, both(**timed(int8_flags=["avx2", "i8mm"]))),
    ("int8", GOOD, UINT8_BAR, {"lines": {"cpu_speedup": None}, "pixels": timed()}),  # lines kept in float
    ("int8", GOOD, UINT8_BAR, {"lines": {"cpu_speedup": {}}, "pixels": timed()}),
    ("int8", GOOD, UINT8_BAR, both(weight_bits=8, **timed())),  # this CPU's kernels may saturate them
]


def precisions(bundle: Path, scratch: Path) -> list[dict]:
    """What each requested precision runs (Runtime.precision), on copies with reduced-precision graphs."""
    cases = []
    for i, (precision, error, bar, fields) in enumerate(PRECISION_CASES):
        folder = with_precision(bundle, scratch / f"precision-{i}", precision, error, bar, fields)
        for requested in ("auto", precision, "fp32"):
            try:
                with Runtime(folder, backend="ort-cpu", threads=1, precision=requested) as runtime:
                    cases.append({"dir": str(folder), "requested": requested, "runs": runtime.precision})
            except BundleError as exc:
                cases.append({"dir": str(folder), "requested": requested, "refused": str(exc)})
    return cases


def main(scratch: Path) -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    bundle = tiny_bundle(scratch)
    model = json.loads((bundle / "manifest.json").read_text())["model"]
    version1 = scratch / "version1"  # the same bundle as format version 1: no "stages", the built-in contract
    shutil.rmtree(version1, ignore_errors=True)
    shutil.copytree(bundle, version1)
    edit(version1, lambda m: (m.update(format_version=1), m.pop("stages")))
    with Runtime(bundle) as runtime:
        auto = runtime.backend_name  # what "auto" takes here
    references = {"bundle": str(bundle), "auto": auto, "version1": str(version1), "stages": stages.to_manifest(),
                  "seeds": seeds(), "coords": coords(), "plans": plans(model), "images": images(bundle, scratch),
                  "requests": request_refusals(bundle), "refusals": bundle_refusals(bundle, scratch),
                  "nonfinite": nonfinite(bundle), "precisions": precisions(bundle, scratch)}
    (scratch / "references.json").write_text(json.dumps(references, allow_nan=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

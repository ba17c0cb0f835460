"""The bundle format: one folder, `manifest.json` + ONNX graphs + optional engines.

This module is the single definition of the format (schema, reading, validation,
writing); the exporter writes bundles through it and the runtime reads them through it.
It needs the standard library only (no numpy, no torch), so any device can read a bundle.

manifest.json (format_version 2):
{
  "format": "creps-bundle", "format_version": 2,
  "exporter": {"name": "creps", "version": "0.1.0", ...},
  "source": {"file": "network.safetensors", "sha256": "..."},
  "model": {"z_dim", "w_dim", "num_ws", "num_blocks", "blocks": [8, 16, ...], "rank",
            "biline_channels", "img_resolution", "img_channels", "mapping_layers",
            "channel_base", "channel_max", "truncation_cutoff"},
  "graphs": {"<stage>[.<precision>]": {"stage", "file", "sha256", "opset", "precision",
             "inputs": [{"name", "dtype", "shape"}], "outputs": [...], ...}},
  "engines": {"<name>": {"graph", "file", "sha256", "precision", "profiles",
              "tensorrt_version", "gpu_name", "compute_capability", ...}},
  "verification": {...},       # free-form records of parity checks
  "stages": {"<stage>": {"inputs": [{"name", "dtype", "axes"}], "outputs": [...]}}
}
Graph shapes list ints for fixed axes and names (`batch`, `height`, `width`) for dynamic ones.

"stages" is the stage contract (`creps.runtime.stages.to_manifest()`), recorded so that a
runtime in another language reads it instead of restating it: for each stage (mapping,
lines, pixels, generator) its inputs and outputs as lists in call order, each tensor's
dtype (float32) and axes. An axis is a model field name (fixed at manifest["model"][field]),
an int (fixed at that size) or a dynamic axis name: "batch", "height" or "width". An
output's size on a dynamic axis is that of the call's inputs carrying the same name (batch
from z or ws, height from ys or cols, width from xs or rows).

Format version 1 is version 2 without "stages" (the built-in contract applies); this creps
reads both and writes 2. A recorded "stages" must equal this creps's contract.

Reading checks every model field's type and range, each graph's recorded IO against the
stage contract and the model section, and img_resolution against the blocks; a backend
then checks the recorded IO against the graph file itself (`check_graph_file`). The
manifest is the one file whose hash is not recorded, so these checks are what catches an
edited one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from creps.errors import BundleError
from creps.files import atomic_path
from creps.runtime import stages
from creps.runtime.stages import CONTRACT, DYNAMIC, IO_DTYPE, STAGES, graph_key

FORMAT = "creps-bundle"
FORMAT_VERSION = 2  # what this creps writes
READS = (1, 2)  # 1: no "stages" section, the built-in contract applies
MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_FIELDS = ("z_dim", "w_dim", "num_ws", "num_blocks", "blocks", "rank", "biline_channels", "img_resolution",
                "img_channels", "mapping_layers", "channel_base", "channel_max", "truncation_cutoff")
# The largest size a manifest may state: the C runtime and TensorRT's shape ranges hold an int32,
# and no model comes near it; a bigger number is damage, not a model.
MAX_SIZE = 2**31 - 1
EDITED = "restore manifest.json or re-export the bundle"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk."""

    path: Path
    manifest: dict

    @property
    def model(self) -> dict:
        return self.manifest["model"]

    @property
    def graphs(self) -> dict:
        return self.manifest["graphs"]

    @property
    def engines(self) -> dict:
        return self.manifest.get("engines", {})

    def has_graph(self, stage: str, precision: str = "fp32") -> bool:
        return graph_key(stage, precision) in self.graphs

    def graph(self, stage: str, precision: str = "fp32") -> dict:
        key = graph_key(stage, precision)
        if key not in self.graphs:
            have = ", ".join(sorted(self.graphs)) or "none"
            raise BundleError(f"{self.path}: no {key} graph in the bundle (it has: {have}); re-export it")
        return self.graphs[key]

    def graph_path(self, stage: str, precision: str = "fp32") -> Path:
        return self.path / self.graph(stage, precision)["file"]

    def file(self, entry: dict) -> Path:
        return self.path / entry["file"]


def _require(cond: bool, path, message: str) -> None:
    if not cond:
        raise BundleError(f"{path}: {message}")


def _size(value, least: int = 1) -> bool:
    return type(value) is int and least <= value <= MAX_SIZE  # type(): a JSON true is no size


def validate_model(model, path) -> None:
    """The model section's fields, each of its type and range, and their relations."""
    _require(isinstance(model, dict), path, "manifest has no model section")
    unknown = sorted(map(str, set(model) - set(MODEL_FIELDS)))
    _require(not unknown, path, f"manifest model section has unknown field {', '.join(unknown)} "
                                "(a bundle from a newer creps?)")
    missing = [k for k in MODEL_FIELDS if k not in model]
    _require(not missing, path, f"manifest model section lacks {', '.join(missing)}")
    for field in MODEL_FIELDS:
        value = model[field]
        if field == "blocks":
            ok, want = isinstance(value, list) and value and all(_size(b) for b in value), "a list of sizes"
        elif field == "truncation_cutoff":
            ok, want = value is None or _size(value, 0), "null or a count"
        else:
            ok, want = _size(value), f"an integer in 1..{MAX_SIZE}"
        _require(ok, path, f"manifest model {field} = {json.dumps(value)[:40]} must be {want}")


def validate_relations(model: dict, path) -> None:
    """What the model section's fields imply of each other (DESIGN: B = log2(res) - 2 blocks, b8 ... b_res)."""
    blocks, res = model["blocks"], model["img_resolution"]
    _require(len(blocks) == model["num_blocks"], path,
             f"manifest model blocks {blocks} has {len(blocks)} entries, num_blocks is {model['num_blocks']}; {EDITED}")
    # res == 2 ** (num_blocks + 2) without raising 2 to a damaged num_blocks.
    _require(res & (res - 1) == 0 and res.bit_length() == model["num_blocks"] + 3, path,
             f"manifest model img_resolution = {res} contradicts num_blocks = {model['num_blocks']} "
             f"(B = log2(img_resolution) - 2 blocks); {EDITED}")
    _require(blocks == [8 * 2**i for i in range(len(blocks))], path,
             f"manifest model blocks {blocks} are not 8, 16, ..., img_resolution {res}; {EDITED}")
    cutoff = model["truncation_cutoff"]
    _require(cutoff is None or cutoff <= model["num_ws"], path,
             f"manifest model truncation_cutoff = {cutoff} exceeds num_ws = {model['num_ws']}; {EDITED}")


def _shape_text(shape) -> str:
    return json.dumps(shape)[:80] if isinstance(shape, list) else repr(shape)[:80]


def validate_signature(key: str, entry: dict, model: dict, path) -> None:
    """A graph entry's recorded IO (names, dtypes, ranks, fixed sizes) against its stage's
    contract and the model section: the manifest is not hashed, so an edited field shows here."""
    contract = CONTRACT[entry["stage"]]
    for side, names, specs in (("inputs", contract.input_names, contract.inputs),
                               ("outputs", contract.output_names, contract.outputs)):
        tensors = entry.get(side)
        _require(isinstance(tensors, list) and all(isinstance(t, dict) for t in tensors), path,
                 f"graph {key}: {side} is not a list of tensors")
        got = [t.get("name") for t in tensors]
        named = all(isinstance(n, str) for n in got)  # set() of a dict name is a TypeError
        _require(named and len(got) == len(names) and set(got) == set(names), path,
                 f"graph {key}: {side} {json.dumps(got)[:80]}, the {entry['stage']} stage has {', '.join(names)}")
        axes_of = {t.name: t.axes for t in specs}
        for tensor in tensors:
            name, shape, axes = tensor["name"], tensor.get("shape"), axes_of[tensor["name"]]
            _require(tensor.get("dtype") == IO_DTYPE, path,
                     f"graph {key}: {name} has dtype {tensor.get('dtype')!r}, the runtime feeds {IO_DTYPE}")
            _require(isinstance(shape, list) and len(shape) == len(axes), path,
                     f"graph {key}: {name} has shape {_shape_text(shape)}, the stage contract has rank {len(axes)} "
                     f"[{', '.join(map(str, axes))}]")
            for axis, (size, meaning) in enumerate(zip(shape, axes)):
                if meaning in DYNAMIC:
                    _require(isinstance(size, str) and size, path,
                             f"graph {key}: {name} axis {axis} ({meaning}) is fixed at {size!r}; the runtime needs "
                             "it dynamic; re-export the bundle")
                elif isinstance(meaning, int):
                    _require(type(size) is int and size == meaning, path,
                             f"graph {key}: {name} has shape {_shape_text(shape)}, the stage contract says {list(axes)}")
                else:
                    _require(type(size) is int and size == model[meaning], path,
                             f"manifest model {meaning} = {model[meaning]} contradicts graph {key}: its {name} has "
                             f"shape {_shape_text(shape)} [{', '.join(axes)}]; {EDITED}")


def _plain_name(file: str) -> bool:
    return bool(file) and "/" not in file and "\\" not in file and "\0" not in file and not file.startswith(".")


def validate_manifest(manifest: dict, path) -> None:
    """Check the manifest's structure and its model against every graph; raises BundleError naming what is wrong."""
    _require(isinstance(manifest, dict), path, "manifest is not a JSON object")
    _require(manifest.get("format") == FORMAT, path, f"not a creps bundle (format {manifest.get('format')!r:.40})")
    version = manifest.get("format_version")
    _require(
        version in READS and type(version) is int, path,
        f"bundle format version {version!r:.40}, this creps reads versions {' and '.join(map(str, READS))}; "
        "re-export the bundle with this creps (creps-export) or install the creps that wrote it",
    )
    if version >= 2 or "stages" in manifest:
        found = stages.difference(manifest.get("stages"))
        _require(found is None, path, f"manifest stages contradict this creps's stage contract: {found}; "
                                      "re-export the bundle")
    model = manifest.get("model")
    validate_model(model, path)
    graphs = manifest.get("graphs")
    _require(isinstance(graphs, dict) and graphs, path, "manifest lists no graphs")
    engines = manifest.get("engines", {})
    _require(isinstance(engines, dict), path, "manifest engines is not an object")
    for key, entry in [*graphs.items(), *engines.items()]:
        _require(isinstance(entry, dict), path, f"entry {key} is not an object")
        for field in ("file", "sha256", "precision"):
            _require(isinstance(entry.get(field), str), path, f"entry {key} lacks {field}")
        _require(entry["precision"] in PRECISIONS, path, f"entry {key}: unknown precision {entry['precision']!r:.40}")
        _require(_plain_name(entry["file"]), path,
                 f"entry {key}: file {entry['file']!r:.80} must be a plain name inside the bundle")
    for key, entry in graphs.items():
        _require(entry.get("stage") in STAGES, path, f"graph {key}: unknown stage {entry.get('stage')!r:.40}")
        _require(key == graph_key(entry["stage"], entry["precision"]), path, f"graph {key}: key does not match")
        validate_signature(key, entry, model, path)
    validate_relations(model, path)


def read_bundle(path: str | os.PathLike, verify_hashes: bool = True) -> Bundle:
    """Load and validate a bundle; with `verify_hashes`, check every listed file's sha256."""
    path = Path(path)
    _require(path.is_dir(), path, "no such bundle folder")
    manifest_path = path / MANIFEST
    _require(manifest_path.is_file(), path, f"no {MANIFEST} (not a bundle, or an export that did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8, JSON or a 4300+ digit int
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc})") from None
    validate_manifest(manifest, path)
    bundle = Bundle(path, manifest)
    if verify_hashes:
        for key, entry in {**bundle.graphs, **bundle.engines}.items():
            verify_file(bundle, key, entry)
    return bundle


def verify_file(bundle: Bundle, key: str, entry: dict) -> None:
    file = bundle.file(entry)
    _require(file.is_file(), bundle.path, f"{entry['file']} ({key}) is missing; re-export the bundle")
    digest = sha256_file(file)
    _require(
        digest == entry["sha256"], bundle.path,
        f"{entry['file']} ({key}) does not match its sha256 in the manifest (corrupt or altered); "
        "re-export the bundle",
    )


def check_graph_file(bundle: Bundle, key: str, shapes: dict[str, list]) -> None:
    """Refuse a graph file whose IO shapes, as the backend's library reads them from the file
    ({name: shape}; a dynamic axis a name, None or -1), are not those its entry records.

    read_bundle checked the recorded signature against the model section; the manifest is
    not hashed, so a model field edited together with the recorded shapes is caught here.
    """
    entry = bundle.graphs[key]
    for tensor in entry["inputs"] + entry["outputs"]:
        recorded, actual = tensor["shape"], shapes.get(tensor["name"])

        def same(want, have) -> bool:
            fixed = isinstance(have, int) and have >= 0
            return have == want if isinstance(want, int) else not fixed

        _require(actual is not None and len(actual) == len(recorded) and all(map(same, recorded, actual)),
                 bundle.path, f"{entry['file']}: {tensor['name']} has shape {actual}, the manifest records "
                              f"{recorded}; {EDITED}")


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    """Validate and write manifest.json into a bundle folder (atomically), in this creps's
    format: its "format", "format_version" and "stages" replace any that `manifest` has
    (a manifest read from an older bundle is written as the current format)."""
    folder = Path(folder)
    fields = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "stages")}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **fields, "stages": stages.to_manifest()}
    validate_manifest(manifest, folder)
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def file_entry(folder: str | os.PathLike, file: str, precision: str, **fields) -> dict:
    """A manifest entry for a file already inside `folder`, with its sha256."""
    return {"file": file, "sha256": sha256_file(Path(folder) / file), "precision": precision, **fields}

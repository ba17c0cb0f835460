"""The bundle format: one folder, `manifest.json` + ONNX graphs + optional engines.

This module is the single definition of the format (schema, reading, validation,
writing); the exporter writes bundles through it and the runtime reads them through it.
It needs the standard library only (no numpy, no torch), so any device can read a bundle.

manifest.json (format_version 1):
{
  "format": "creps-bundle", "format_version": 1,
  "exporter": {"name": "creps", "version": "0.1.0", ...},
  "source": {"file": "network.safetensors", "sha256": "..."},
  "model": {"z_dim", "w_dim", "num_ws", "num_blocks", "blocks": [8, 16, ...], "rank",
            "biline_channels", "img_resolution", "img_channels", "mapping_layers",
            "channel_base", "channel_max", "truncation_cutoff"},
  "graphs": {"<stage>[.<precision>]": {"stage", "file", "sha256", "opset", "precision",
             "inputs": [{"name", "dtype", "shape"}], "outputs": [...], ...}},
  "engines": {"<name>": {"graph", "file", "sha256", "precision", "profiles",
              "tensorrt_version", "gpu_name", "compute_capability", ...}},
  "verification": {...}        # free-form records of parity checks
}
Shapes list ints for fixed axes and names (`batch`, `height`, `width`, ...) for dynamic ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from creps.errors import BundleError
from creps.files import atomic_path

FORMAT = "creps-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STAGES = ("mapping", "lines", "pixels", "generator")
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_KEYS = ("z_dim", "w_dim", "num_ws", "num_blocks", "rank", "biline_channels", "img_resolution",
              "img_channels")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def graph_key(stage: str, precision: str = "fp32") -> str:
    return stage if precision == "fp32" else f"{stage}.{precision}"


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


def validate_manifest(manifest: dict, path) -> None:
    """Check the manifest's structure; raises BundleError naming what is wrong."""
    _require(isinstance(manifest, dict), path, "manifest is not a JSON object")
    _require(manifest.get("format") == FORMAT, path, f"not a creps bundle (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    _require(
        version == FORMAT_VERSION, path,
        f"bundle format version {version!r}, this creps reads version {FORMAT_VERSION}; "
        "re-export the bundle with this creps (creps-export) or install the creps that wrote it",
    )
    model = manifest.get("model")
    _require(isinstance(model, dict), path, "manifest has no model section")
    missing = [k for k in MODEL_KEYS if not isinstance(model.get(k), int)]
    _require(not missing, path, f"manifest model section lacks {', '.join(missing)}")
    graphs = manifest.get("graphs")
    _require(isinstance(graphs, dict) and graphs, path, "manifest lists no graphs")
    for key, entry in {**graphs, **manifest.get("engines", {})}.items():
        _require(isinstance(entry, dict), path, f"entry {key} is not an object")
        for field in ("file", "sha256", "precision"):
            _require(isinstance(entry.get(field), str), path, f"entry {key} lacks {field}")
        _require(entry["precision"] in PRECISIONS, path, f"entry {key}: unknown precision {entry['precision']!r}")
        _require(
            "/" not in entry["file"] and "\\" not in entry["file"] and not entry["file"].startswith("."),
            path, f"entry {key}: file {entry['file']!r} must be a plain name inside the bundle",
        )
    for key, entry in graphs.items():
        _require(entry.get("stage") in STAGES, path, f"graph {key}: unknown stage {entry.get('stage')!r}")
        _require(key == graph_key(entry["stage"], entry["precision"]), path, f"graph {key}: key does not match")


def read_bundle(path: str | os.PathLike, verify_hashes: bool = True) -> Bundle:
    """Load and validate a bundle; with `verify_hashes`, check every listed file's sha256."""
    path = Path(path)
    _require(path.is_dir(), path, "no such bundle folder")
    manifest_path = path / MANIFEST
    _require(manifest_path.is_file(), path, f"no {MANIFEST} (not a bundle, or an export that did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    """Validate and write manifest.json into a bundle folder (atomically)."""
    folder = Path(folder)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    validate_manifest(manifest, folder)
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def file_entry(folder: str | os.PathLike, file: str, precision: str, **fields) -> dict:
    """A manifest entry for a file already inside `folder`, with its sha256."""
    return {"file": file, "sha256": sha256_file(Path(folder) / file), "precision": precision, **fields}

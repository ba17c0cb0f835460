"""`creps-export --trt`: one strongly typed TensorRT engine per stage, written into the bundle.

Thin on purpose, and written to the Python API that TensorRT 10.3 (JetPack 6) and 11.x
share (docs/tensorrt.md lists every call and the page it follows):

    Builder.create_network(1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    OnnxParser.parse (INT8 biases folded to float) -> IBuilderConfig (workspace via set_memory_pool_limit,
    one optimization profile from the runtime's tile plan, a shared timing cache,
    optional VERSION_COMPATIBLE / hardware compatibility) -> build_serialized_network

Strongly typed: no FP16/INT8 builder flags (TensorRT 11 removed them); the precision is
the graph's own (FP16 graphs with FP32 islands, INT8 Q/DQ graphs, from creps-calib). The
plan (graphs, profiles, memory) is `creps.export.trt_plan`, which needs no TensorRT.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tqdm import tqdm

from creps.errors import CrepsError
from creps.extras import require
from creps.export.trt_plan import DEFAULT_WORKSPACE, BuildPlan, StageBuild, build_plan
from creps.files import atomic_path
from creps.runtime.bundle import file_entry, read_bundle, write_manifest
from creps.runtime.trt import BackendUnavailable, current_device, load_cudart, load_tensorrt

log = logging.getLogger(__name__)

HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")


class EngineBuildError(CrepsError):
    """TensorRT could not parse a graph or build an engine."""


def _parse(trt, builder, logger, path: Path):
    import onnx  # here, not above: plans (creps-export --trt --dry-run) need no onnx
    from google.protobuf.message import DecodeError

    from creps.calib.qdq import float_biases

    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    try:
        model = float_biases(onnx.load(path))  # INT8 graphs' int32 biases, which TensorRT does not dequantize
    except DecodeError as exc:
        raise EngineBuildError(f"{path}: TensorRT cannot parse it (not an ONNX graph: {exc})") from None
    if not parser.parse(model.SerializeToString(), str(path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise EngineBuildError(f"{path}: TensorRT cannot parse it ({errors or 'no details'})")
    return network, parser


def _config(trt, builder, network, build: StageBuild, workspace: int, cache, version_compatible: bool,
            hardware: str):
    config = builder.create_builder_config()
    # TensorRT runs FP32 layers as TF32 (10-bit mantissa, FP16's) by default: that would break
    # the FP32 engines' parity and the FP16 engines' FP32 islands, chosen where FP16 is too coarse.
    config.clear_flag(trt.BuilderFlag.TF32)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(d < 0 for d in tensor.shape):  # static inputs (psi) need no profile
            shapes = build.profile[tensor.name]
            profile.set_shape(tensor.name, shapes.min, shapes.opt, shapes.max)
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(f"TensorRT refuses the {build.stage} optimization profile (see its log above)")
    if not config.set_timing_cache(cache, False):  # False: made on another GPU (TensorRT's check)
        raise EngineBuildError("TensorRT refuses the timing cache (made on another GPU?): pass another "
                               "--timing-cache file or delete this one")
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if hardware == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    elif hardware == "same_compute_capability":
        level = getattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY", None)  # TensorRT 10.9+
        if level is None:
            raise EngineBuildError(f"TensorRT {trt.__version__} has no same-compute-capability engines (10.9 and "
                                   "later have them; JetPack 6 ships 10.3): use --hardware-compatible ampere_plus")
        config.hardware_compatibility_level = level
    return config


def build_engines(bundle_dir: str | os.PathLike, plan: BuildPlan, timing_cache: str | os.PathLike | None = None,
                  version_compatible: bool = False, hardware: str = "none", progress: bool = False) -> dict:
    """Build the plan's engines into the bundle and record them in its manifest; returns the entries."""
    if hardware not in HARDWARE_LEVELS:
        raise EngineBuildError(f"hardware compatibility {hardware!r} is not one of {', '.join(HARDWARE_LEVELS)}")
    try:
        trt = load_tensorrt()
        device = current_device(load_cudart())
    except BackendUnavailable as exc:
        raise EngineBuildError(f"{str(exc).removeprefix('tensorrt: ')}: no engines were built (the ONNX bundle is "
                               "complete; build them where TensorRT and the GPU are: creps-export --out DIR --trt)"
                               ) from None
    require("creps-export --trt", "trt")  # onnx, read by _parse
    bundle = read_bundle(bundle_dir)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = builder.create_builder_config().create_timing_cache(cache_bytes)
    entries = {}
    for build in tqdm(plan.stages, desc="tensorrt", unit="engine", disable=not progress):
        network, _parser = _parse(trt, builder, logger, bundle.file(bundle.graphs[build.graph]))
        config = _config(trt, builder, network, build, plan.workspace, cache, version_compatible, hardware)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineBuildError(f"TensorRT could not build the {build.stage} engine (see its log above)")
        file = f"{build.stage}.engine"
        with atomic_path(bundle.path / file) as tmp:
            tmp.write_bytes(memoryview(serialized))
        entries[build.stage] = file_entry(
            bundle.path, file, build.precision, graph=build.graph, stage=build.stage,
            profiles={k: v.to_dict() for k, v in build.profile.items()}, workspace=plan.workspace,
            tensorrt_version=trt.__version__, gpu_name=device.name, compute_capability=device.compute_capability,
            version_compatible=version_compatible, hardware_compatibility=hardware, strongly_typed=True)
        log.info("built %s from %s", file, build.graph)
    if cache_path:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(memoryview(cache.serialize()))
    manifest = {**bundle.manifest, "engines": {**bundle.engines, **entries}}
    write_manifest(bundle.path, manifest)
    return entries


def default_sizes_note(manifest: dict) -> str:
    """What a build without --sizes covers (build_plan's default), said before its plan or engines."""
    resolution = manifest["model"]["img_resolution"]
    return f"no --sizes: planning for the training resolution {resolution}x{resolution} only"


def precision_and_engines(bundle_dir, *, fp16: bool, int8: bool, trt: bool, load_G=None, sizes=None, batch: int = 1,
                          tile=None, max_memory=None, workspace: int = DEFAULT_WORKSPACE, timing_cache=None,
                          version_compatible: bool = False, hardware: str = "none", echo=log.info) -> None:
    """What `creps-export --fp16/--int8/--trt` does to a bundle, in order.

    FP16 / INT8 graphs are made (creps.calib) unless the bundle has them; `load_G()` gives
    (checkpoint path, generator), needed by INT8 for folded graphs. With `trt`, one engine
    per stage is built from the graphs of the chosen precision (int8 over fp16 over fp32).
    (`creps-export --dry-run` prints the build plan instead, in creps.export.cli.)
    """
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    manifest = read_bundle(bundle_dir, verify_hashes=False).manifest
    if sizes is None and trt:
        echo(default_sizes_note(manifest))
    wanted = [p for p, asked in (("fp16", fp16), ("int8", int8)) if asked]
    present = [p for p in wanted if all(f"{s}.{p}" in manifest["graphs"] for s in ("lines", "pixels"))]
    missing = [p for p in wanted if p not in present]
    if present:
        echo(f"{' and '.join(present)} graphs already in {bundle_dir}, kept (creps-calib rebuilds them)"
             + ("; nothing to do" if not (missing or trt) else ""))
    if missing:
        require(f"creps-export --{' --'.join(missing)}", "calib")
        from creps.calib import calibrate_bundle

        source, G = load_G() if "int8" in missing and load_G else (None, None)
        calibrate_bundle(bundle_dir, "fp16" in missing, "int8" in missing, G, source=source)
        echo(f"wrote {' and '.join(missing)} graphs into {bundle_dir}")
    if trt:
        plan = build_plan(read_bundle(bundle_dir).manifest, precision, sizes, batch, max_memory, tile,
                          workspace=workspace)
        entries = build_engines(bundle_dir, plan, timing_cache, version_compatible, hardware, progress=True)
        echo(f"built {', '.join(e['file'] for e in entries.values())} ({precision}) into {bundle_dir}")

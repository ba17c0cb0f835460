"""Precisions: which of a bundle's graphs a backend runs, and what `auto` picks.

The fp32 graphs are the model's exact export. creps-calib adds fp16 and int8 graphs of the
two stages that cost (lines, pixels) and records in the manifest each graph's error
against fp32 (int8: measured on full images; fp16: predicted by the range analysis) and
the bars it was judged against (`verification.precision.bars`). The mapping network
always runs in fp32: it costs nothing and every pixel depends on it.

`auto` takes, of the precisions the bundle has, the fastest on the backend (FASTER, then
MEASURED where the bundle records the speed-up on this kind of CPU) whose recorded error
meets its recorded bar; fp32 always qualifies. A graph kept below
its bar (creps-calib --force) runs only when asked for by name. TensorRT runs what its
engines were built in, so there a precision selects nothing: it must match the engines.
Standard library only, like the bundle format.
"""

from __future__ import annotations

import logging

from creps.errors import BundleError
from creps.runtime.cpu import int8_kernel_class, saturates_8bit_weights

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
CHOICES = (*PRECISIONS, "auto")
REDUCED_STAGES = ("lines", "pixels")  # the stages creps-calib makes fp16 / int8 graphs of
# The precisions faster than fp32 on each backend wherever it runs, fastest first (what `auto`
# tries). ONNX Runtime on x86 has no fp16 kernels (fp16 graphs run slower than fp32 there). Its
# CUDA provider runs fp16 on tensor cores.
FASTER = {"ort-cpu": (), "ort-cuda": ("fp16",)}
# The precisions `auto` takes on a backend only where the bundle records them faster on this CPU.
# ONNX Runtime's INT8 Q/DQ MatMuls become integer kernels, 2x float32 as lone GEMMs with AVX2, but
# whole INT8 pipelines near the 45 dB bar measured 0.75-1.04x fp32 on a 2-core AVX2 CPU, 1.4-1.8x
# on Zen 4 and Zen 5 CPUs and an Intel Xeon with VNNI for the published config and no faster for the
# bundled model (layers 32-128 wide: benchmarks/results/int8.json, int8-xeon.json). So creps-calib
# times each INT8 stage on its CPU (calib/speed.py) and records the speed-up with the CPU's model and INT8 kernel flags
# (`cpu_speedup` on the graph entries, runtime/cpu.py int8_kernel_class).
MEASURED = {"ort-cpu": ("int8",), "ort-cuda": ()}
HELP = ("fp32: the exact model; int8: TensorRT's fast precision, and ONNX Runtime's integer kernels on the CPU "
        "(faster than fp32 there only for wide models on CPUs with VNNI); fp16: a GPU precision (ONNX Runtime on "
        "x86 has no fp16 kernels); auto: the fastest on the backend whose error recorded by creps-calib meets the "
        "bundle's bar (int8 on the CPU: where creps-calib measured it faster, on a CPU like this one).")


def stage_precision(stage: str, precision: str) -> str:
    """The precision of `stage`'s graph in a `precision` run (the mapping stays fp32)."""
    return precision if stage in REDUCED_STAGES else "fp32"


def calib_command(bundle_path, precision: str) -> str:
    """The command that adds `precision` graphs to a bundle."""
    return f"creps-calib --bundle {bundle_path}" + (" --int8" if precision == "int8" else "")


def present(bundle) -> list[str]:
    """The precisions whose graphs the bundle has for every stage."""
    return [p for p in PRECISIONS if all(bundle.has_graph(stage, stage_precision(stage, p))
                                         for stage in ("mapping", *REDUCED_STAGES))]


def shortfall(bundle, precision: str) -> str | None:
    """Why `precision`'s recorded error does not meet its recorded bar (None: it does).

    A bar names the error figures it bounds (calib/bars.py): a key ending in `psnr_db` is a
    lower bound (a null figure means identical images), one ending in `max_abs` an upper bound."""
    if precision == "fp32":
        return None
    bar = ((bundle.manifest.get("verification") or {}).get("precision") or {}).get("bars", {}).get(precision)
    if not isinstance(bar, dict) or not bar:
        return f"no {precision} bar recorded"
    for stage in REDUCED_STAGES:
        entry = bundle.graph(stage, precision)
        error = entry.get("measured_error") or entry.get("predicted_error")
        if not isinstance(error, dict):
            return f"no error recorded for the {stage} graph"
        for key, limit in bar.items():
            if key not in error:
                return f"no {key} recorded for the {stage} graph"
            value = error[key]
            if key.endswith("psnr_db"):
                if value is not None and not (_number(value) and _number(limit) and value >= limit):
                    return f"{stage} {key} {value!r} < {limit!r}"
            elif key.endswith("max_abs"):
                if not (_number(value) and _number(limit) and value <= limit):
                    return f"{stage} {key} {value!r} > {limit!r}"
            else:
                return f"a {precision} bar on {key!r}, which this creps does not know"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int8_weight_bits(bundle) -> int:
    """The width of the int8 graphs' weights (bundles calibrated before it was recorded have 7)."""
    widths = [bundle.graph(stage, "int8").get("weight_bits", 7) for stage in REDUCED_STAGES]
    for bits in widths:
        if bits not in (7, 8) or isinstance(bits, bool):
            raise BundleError(f"{bundle.path}: int8 weight_bits {bits!r} in the manifest, not 7 or 8; "
                              f"re-run: {calib_command(bundle.path, 'int8')}")
    return max(widths)


def saturated(bundle, backend: str) -> bool:
    """Whether ONNX Runtime's CPU kernels saturate the bundle's int8 weights here (runtime/cpu.py)."""
    return backend == "ort-cpu" and int8_weight_bits(bundle) > 7 and saturates_8bit_weights()


def check_int8_kernels(bundle, backend: str) -> None:
    """Refuse int8 graphs whose 8-bit weights ONNX Runtime's CPU kernels saturate on this CPU."""
    if saturated(bundle, backend):
        raise BundleError(f"{bundle.path}: its int8 graphs have 8-bit weights, which ONNX Runtime's integer kernels "
                          "saturate on this CPU (x86 without VNNI); make 7-bit ones with: "
                          f"{calib_command(bundle.path, 'int8')} --weight-bits 7")


def unmeasured(bundle, precision: str) -> str | None:
    """Why the bundle does not record `precision` as faster than fp32 on this CPU (None: it
    does): each of its stage graphs with a `cpu_speedup` record must be over 1x and timed on a
    CPU of this model and INT8 kernel flags, and one stage at least must have one (a stage
    creps-calib kept in float has none: its graph is the fp32 one)."""
    here = int8_kernel_class()
    records = [bundle.graph(stage, precision).get("cpu_speedup") for stage in REDUCED_STAGES]
    if all(record is None for record in records):
        return "no speed-up recorded on a CPU"
    for record in (r for r in records if r is not None):
        if not isinstance(record, dict) or not _number(record.get("speedup")):
            return f"cpu_speedup {record!r} is not a timing record"
        there = {"cpu": record.get("cpu"), "int8_flags": record.get("int8_flags")}
        if there != here:
            return f"timed on {there['cpu']} with {there['int8_flags']}, not this {here['cpu']} with {here['int8_flags']}"
        if record["speedup"] <= 1:
            return f"timed at {record['speedup']}x fp32"
    return None


def choose(bundle, backend: str, requested: str) -> str:
    """The precision an ONNX Runtime backend runs for `requested` (a name or "auto"), or
    BundleError (one line, with the command that makes it) when the bundle lacks it."""
    have = present(bundle)
    if requested == "auto":
        for precision in (*FASTER[backend], *MEASURED[backend]):
            why = "not in the bundle" if precision not in have else shortfall(bundle, precision)
            if why is None and precision in MEASURED[backend]:
                why = unmeasured(bundle, precision)
            if why is None and precision == "int8" and saturated(bundle, backend):
                why = "8-bit weights, which this CPU's integer kernels saturate"
            if why is None:
                log.info("precision auto on %s: %s", backend, precision)
                return precision
            log.info("precision auto on %s: not %s (%s)", backend, precision, why)
        return "fp32"
    if requested not in PRECISIONS:
        raise BundleError(f"unknown precision {requested!r} (choose from {', '.join(CHOICES)})")
    if requested not in have:
        raise BundleError(f"{bundle.path} has no {requested} graphs (it has: {', '.join(have)}); make them with: "
                          f"{calib_command(bundle.path, requested)}")
    if requested == "int8":
        check_int8_kernels(bundle, backend)
    if requested not in ("fp32", *FASTER[backend], *MEASURED[backend]):
        log.warning("%s graphs on %s run slower than fp32 (%s)", requested, backend, HELP)
    why = shortfall(bundle, requested)
    if why is not None:
        log.warning("%s graphs of %s miss their bar (%s); running them because they were asked for",
                    requested, bundle.path, why)
    return requested


def engines_precision(bundle) -> str:
    """The precision the bundle's TensorRT engines were built in (that of its lines and pixels engines)."""
    built = sorted({bundle.engines[stage].get("precision") for stage in REDUCED_STAGES if stage in bundle.engines})
    if len(built) != 1 or built[0] not in PRECISIONS:
        raise BundleError(f"{bundle.path}: the lines and pixels engines are built in {built or 'nothing'}, not one "
                          f"precision; rebuild them: creps-export --out {bundle.path} --trt")
    return built[0]


def engine_mismatch(bundle, requested: str) -> str | None:
    """Why the bundle's engines cannot run `requested` (None: they can, or it is auto)."""
    built = engines_precision(bundle)
    if requested in ("auto", built):
        return None
    flag = "" if requested == "fp32" else f" --{requested}"
    return (f"the bundle's engines are {built}, not {requested}; build {requested} engines with: "
            f"creps-export --out {bundle.path}{flag} --trt")

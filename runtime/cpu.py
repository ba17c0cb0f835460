"""This CPU: its model name and feature flags, whether ONNX Runtime's integer kernels run
8-bit int8 weights exactly here, and what an INT8 speed measured here holds for. Standard
library only, like the rest of the runtime.

ONNX Runtime's integer MatMul on x86 without VNNI (AVX2) shifts the int8 activations to
uint8 and adds pairs of u8*s8 products in int16 (vpmaddubsw), which saturates once a
weight's |q| passes 64 (255 * 127 * 2 > 32767): 8-bit weights come out wrong there (the
bundled default model's decoders 30.9 dB off the exact Q/DQ result, on a Zen 3), 7-bit
weights exactly. VNNI (AVX512-VNNI, AVX-VNNI, AMX) accumulates u8*s8 in int32 and Arm's
dot products are exact too, so 8-bit weights are exact there, and on TensorRT anywhere.
"""

from __future__ import annotations

import platform

# The x86 flags whose integer dot products accumulate in int32 (no int16 saturation).
EXACT_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86 = ("x86_64", "amd64", "i386", "i686", "x86")
# The flags ONNX Runtime's integer kernels are chosen by (x86: AVX2, AVX-512, VNNI, AMX; Arm:
# dot products, i8mm): an INT8 speed-up measured with one set of them holds for that set.
INT8_KERNEL_FLAGS = frozenset({"avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})


def cpu(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """This CPU's model name and feature flags, from /proc/cpuinfo where there is one."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())  # the first CPU's
    except OSError:  # not Linux
        pass
    arm = " ".join(f"{key} {fields[key]}" for key in ("CPU implementer", "CPU part") if key in fields)
    model = fields.get("model name") or arm or platform.machine()
    return model, set((fields.get("flags") or fields.get("Features", "")).split())


def int8_kernel_class(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """What an INT8 speed measured on this CPU holds for: {"cpu": its model name, "int8_flags":
    its INT8_KERNEL_FLAGS, sorted} (creps-calib records it beside the speed; `auto` compares)."""
    model, flags = cpu(cpuinfo)
    return {"cpu": model, "int8_flags": sorted(flags & INT8_KERNEL_FLAGS)}


def saturates_8bit_weights(flags: set[str] | None = None, machine: str | None = None) -> bool:
    """Whether ONNX Runtime's CPU integer kernels saturate int8 weights beyond 7 bits here
    (an x86 CPU without VNNI)."""
    flags = cpu()[1] if flags is None else flags
    machine = (platform.machine() if machine is None else machine).lower()
    return machine in X86 and not flags & EXACT_INT8_FLAGS


def exact_weight_bits() -> int:
    """The widest int8 weights ONNX Runtime's CPU kernels run exactly on this CPU: 8, or 7 where they saturate."""
    return 7 if saturates_8bit_weights() else 8

"""Where ONNX Runtime's CPU integer kernels run 8-bit int8 weights exactly (creps.runtime.cpu)."""

import pytest

from creps.runtime import cpu


@pytest.mark.parametrize("flags, machine, saturates", [
    ({"avx2", "fma", "avx512f"}, "x86_64", True),  # AVX2 / AVX-512 without VNNI: int16 pair sums
    ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", False),
    ({"avx2", "avx_vnni"}, "x86_64", False),
    ({"avx2", "amx_int8", "amx_tile"}, "AMD64", False),
    (set(), "i686", True),
    ({"asimd", "asimddp"}, "aarch64", False),  # Arm: exact dot products (and widening multiply-adds without them)
    (set(), "aarch64", False),
])
def test_which_cpus_saturate_8bit_weights(flags, machine, saturates):
    assert cpu.saturates_8bit_weights(flags, machine) is saturates


def test_this_cpu(monkeypatch):
    model, flags = cpu.cpu()
    assert isinstance(model, str) and model
    assert cpu.exact_weight_bits() == (7 if cpu.saturates_8bit_weights(flags) else 8)
    monkeypatch.setattr(cpu, "cpu", lambda: ("a CPU without VNNI", {"avx2"}))
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    assert cpu.saturates_8bit_weights() and cpu.exact_weight_bits() == 7

"""How fast can this CPU multiply float32 matrices, and what does that allow at 512x512?

Issue 5 set its speed target (>= 5x the original's 5.5 s at 512x512) against a GEMM ceiling
of "about 440 GFLOP/s" through ONNX Runtime. This script measures that ceiling at several
shapes on 1 and 2 threads (ONNX Runtime MatMul, constant weight, as creps.bench does), the
same products in PyTorch in float32 and bfloat16, and turns the best float32 figure into
the fastest possible 512x512 image of the published 256 config (its arithmetic from
docs/model.md, as creps-bench counts it). The bfloat16 products are timed only on a CPU
with bfloat16 instructions (avx512_bf16, amx_bf16, Arm bf16): elsewhere PyTorch emulates
them, more than ten times slower than float32, and the record says they were skipped. Run
on a quiet machine.
"""

from __future__ import annotations

import time

from common import benchmark

from creps.bench import BF16_FLAGS, ORIGINAL_512_SECONDS, flops, gemm_ceiling, has_bf16
from creps.cli import entry_point
from creps.export.writer import model_section
from creps.model import Generator, GeneratorConfig

SHAPES = ((4096, 2048), (2048, 4096), (8192, 1024))  # (rows, n): rows x n times n x n
# Emulated bfloat16 ran for over 15 minutes at these shapes on an AVX2-only CPU (issue 10).
NO_BF16 = (f"PyTorch bfloat16 not timed: this CPU has none of {', '.join(sorted(BF16_FLAGS))}, "
           "so PyTorch would emulate it, more than ten times slower than float32")


def torch_gflops(rows: int, n: int, dtype_name: str, threads: int, repeats: int = 5) -> float:
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(rows, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * rows * n * n / best / 1e9


@benchmark("gemm_ceiling", __doc__, takes="about 1 min on 2 cores")
def main() -> dict:
    bf16 = has_bf16()
    if not bf16:
        print(NO_BF16, flush=True)
    rows = []
    for m, n in SHAPES:
        row = {"shape": f"{m}x{n} @ {n}x{n}"}
        for threads in (1, 2):
            row[f"ort_fp32_{threads}t"] = gemm_ceiling(threads, n=n, rows=m)
        row["torch_fp32_2t"] = torch_gflops(m, n, "float32", 2)
        if bf16:
            row["torch_bf16_2t"] = torch_gflops(m, n, "bfloat16", 2)
        rows.append(row)
        print("  ".join(f"{k} {v:.0f}" if isinstance(v, float) else v for k, v in row.items()), flush=True)
    ceiling = max(r["ort_fp32_2t"] for r in rows)
    cost = flops(model_section(Generator(GeneratorConfig()), None), 512, 512)  # as a bundle's manifest has it
    fastest = cost["total"] / (ceiling * 1e9)
    report = {
        "rows": rows,
        "ort_fp32_ceiling_gflops": ceiling,
        "ort_fp32_per_core_gflops": max(r["ort_fp32_1t"] for r in rows),
        "torch_bf16_best_gflops": max(r["torch_bf16_2t"] for r in rows) if bf16 else None,
        **({} if bf16 else {"torch_bf16_skipped": NO_BF16}),
        "published_256_at_512x512": {
            "gflop": cost["total"] / 1e9,
            "fastest_seconds_at_fp32_ceiling": fastest,
            "original_seconds": ORIGINAL_512_SECONDS,
            "largest_speedup_at_fp32_ceiling": ORIGINAL_512_SECONDS / fastest,
            "gflops_needed_for_5x": cost["total"] / (ORIGINAL_512_SECONDS / 5) / 1e9,
        },
    }
    at = report["published_256_at_512x512"]
    print(f"float32 ceiling {ceiling:.0f} GFLOP/s ({report['ort_fp32_per_core_gflops']:.0f} per core); "
          + (f"bfloat16 (PyTorch) {report['torch_bf16_best_gflops']:.0f} GFLOP/s" if bf16 else "bfloat16 skipped"))
    print(f"512x512 = {at['gflop']:.0f} GFLOP: >= {fastest:.2f} s at the float32 ceiling, at most "
          f"{at['largest_speedup_at_fp32_ceiling']:.1f}x the original's {ORIGINAL_512_SECONDS} s; "
          f"5x needs {at['gflops_needed_for_5x']:.0f} GFLOP/s")
    return report


if __name__ == "__main__":
    entry_point(main)()

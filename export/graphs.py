"""One stage -> one ONNX file: the PyTorch exporter (dynamo), named dynamic axes, portability checks.

The example inputs use sizes that occur nowhere in the model (EXAMPLE_HEIGHT, EXAMPLE_WIDTH),
so a shape constant frozen from them is easy to find (`baked_shape_constants`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import onnx_ir.passes.common as ir_passes
import onnxscript.optimizer
import torch
from torch.export import Dim

from creps.export import stages
from creps.export.signature import MIN_OPSET, io_signature  # noqa: F401  (torch-free; re-exported here)
from creps.model import Generator
from creps.runtime.stages import CONTRACT, dynamic_axes

log = logging.getLogger(__name__)

EXAMPLE_BATCH = 2
EXAMPLE_HEIGHT = 19
EXAMPLE_WIDTH = 23
# Graph cleanup: the exporter's own optimizer (onnxscript), with the folding limits raised so
# that every weight expression (weight * gain, transposes) becomes one initializer.
FOLD_LIMIT = 1 << 26
CLEANUP = ("onnxscript.optimizer.optimize_ir (constant folding up to 2^26 elements, pattern rewrites), "
           "then onnx_ir: initializer deduplication, common subexpression elimination, unused-node removal")
# Standard ONNX, no Einsum (TensorRT and the INT8 path want MatMul/Gemm with constant weights).
FORBIDDEN_OPS = {"Einsum"}


@contextlib.contextmanager
def quiet_exporter():
    """Hide the exporter's chatter: progress on stdout (ours is the caller's tqdm bar), notes about
    unrelated op registries (torchvision) and deprecation warnings meant for torch developers."""
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
            yield
    finally:
        registry_log.setLevel(level)


def stage_module(G: Generator, stage: str, truncation_cutoff: int | None) -> torch.nn.Module:
    if stage == "mapping":
        return stages.MappingStage(G, truncation_cutoff)
    if stage == "lines":
        return stages.LinesStage(G)
    if stage == "pixels":
        return stages.PixelsStage(G)
    return stages.FusedGenerator(G, truncation_cutoff)


@torch.no_grad()
def example_inputs(G: Generator, stage: str) -> tuple[torch.Tensor, ...]:
    """Inputs at the example sizes, made by running the stages before `stage`."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(EXAMPLE_BATCH, G.cfg.z_dim, generator=gen)  # (N, z_dim)
    psi = torch.tensor([0.7])  # (1,)
    ys = torch.linspace(0, 1, EXAMPLE_HEIGHT)  # (H,)
    xs = torch.linspace(0, 1, EXAMPLE_WIDTH)  # (W,)
    if stage == "mapping":
        return z, psi
    if stage == "generator":
        return z, psi, ys, xs
    ws = G.mapping(z)  # (N, num_ws, w_dim)
    if stage == "lines":
        return ws, ys, xs
    return (ws, *G.synthesis.lines(ws, ys, xs))


def export_stage(G: Generator, stage: str, path: Path, opset: int, truncation_cutoff: int | None = None,
                 modulation: str = "activation", cleanup: bool = True) -> onnx.ModelProto:
    """Export one stage to `path` (modulated layers in form `modulation`) and return the checked model.

    `cleanup` runs the CLEANUP passes; tests check that the named axes survive them.
    """
    spec = CONTRACT[stage]
    module = stage_module(G, stage, truncation_cutoff).eval()
    dims = {}  # one Dim per axis name: inputs that carry one axis share it
    dynamic = dynamic_axes(stage)
    dynamic_shapes = {name: {axis: dims.setdefault(axis_name, Dim(axis_name))
                             for axis, axis_name in dynamic.get(name, {}).items()} or None
                      for name in spec.input_names}
    with quiet_exporter(), stages.modulation(module, modulation), stages.gemm_layers(module):
        program = torch.onnx.export(
            module, example_inputs(G, stage), dynamo=True, opset_version=opset,
            input_names=list(spec.input_names), output_names=list(spec.output_names),
            dynamic_shapes=dynamic_shapes, optimize=False, verbose=False, external_data=False,
        )
    if cleanup:
        clean(program.model)
    program.save(str(path), external_data=False)
    model = onnx.load(str(path))
    check_graph(model, stage)
    return model


def clean(model) -> None:
    """The CLEANUP passes, in place on an onnx_ir model."""
    onnxscript.optimizer.optimize_ir(model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
    # Folding can turn one weight used twice (b4's input affine, once per half) into two copies.
    ir_passes.DeduplicateInitializersPass(size_limit=FOLD_LIMIT)(model)
    ir_passes.CommonSubexpressionEliminationPass()(model)
    ir_passes.RemoveUnusedNodesPass()(model)


def check_graph(model: onnx.ModelProto, stage: str) -> None:
    """Structural checks every exported graph must pass (raises ValueError)."""
    onnx.checker.check_model(model, full_check=True)
    spec = CONTRACT[stage]
    names_in = tuple(i.name for i in model.graph.input)
    names_out = tuple(o.name for o in model.graph.output)
    if names_in != spec.input_names or names_out != spec.output_names:
        raise ValueError(f"{stage}: graph IO {names_in} -> {names_out}, the stage table says "
                         f"{spec.input_names} -> {spec.output_names}")
    bad = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx") or n.op_type in FORBIDDEN_OPS})
    if bad:
        raise ValueError(f"{stage}: graph uses non-portable ops {', '.join(bad)}")

"""ONNX graphs with BatchNorm folded into their convolutions -> our state dicts, kept finetunable.

An inference export (``torch.onnx.export`` with constant folding) keeps each ``Conv -> BatchNorm`` pair as one ``Conv``
with a bias and names its tensors by number. The convolutions are matched to the model's by execution order (a
forward pass of the zoo model records its ``Conv2d`` calls; the graph lists its ``Conv`` nodes in the order the
exporter traced them) and every pair must agree on shape, stride, padding and groups. A folded pair becomes the conv's
weight plus an identity BatchNorm carrying the bias (gamma 1, running mean 0, running variance ``1 - eps`` so that
``sqrt(var + eps) = 1``): the same function, still a ``Conv -> BatchNorm`` that trains as usual.

``python -m zoo.convert.onnx_folded yolox_nano_coco SRC.onnx DST.safetensors`` writes the shipped
``zoo/weights/yolox_nano_coco.safetensors`` (byte-identical on every run).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import ModelSpec, get_spec


def _graph_convs(path: Path) -> list[tuple[str, Tensor, Tensor | None, dict[str, Any]]]:
    """``(node name, weight, bias, attributes)`` of every ``Conv`` node, in graph order."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ImportError("reading ONNX files needs the onnx package: pip install onnx") from None
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        if node.input[1] not in inits:
            raise ValueError(f"{path}: Conv node {node.name} takes its weight from the graph, not an initializer")
        weight = torch.from_numpy(numpy_helper.to_array(inits[node.input[1]]).copy())
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = torch.from_numpy(numpy_helper.to_array(inits[node.input[2]]).copy())
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        convs.append((node.name, weight, bias, attrs))
    return convs


def _conv_calls(model: nn.Module, input_size: tuple[int, int]) -> list[tuple[str, nn.Conv2d]]:
    """The model's ``Conv2d`` layers in the order a forward pass calls them."""
    calls: list[tuple[str, nn.Conv2d]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=name: calls.append((n, mod)))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()
            model([torch.zeros(3, *input_size)])
    finally:
        for h in hooks:
            h.remove()
    return calls


def _check_pair(node: str, attrs: dict[str, Any], weight: Tensor, name: str, conv: nn.Conv2d) -> None:
    same = (tuple(weight.shape) == tuple(conv.weight.shape)
            and tuple(attrs.get("strides", (1, 1))) == tuple(conv.stride)
            and int(attrs.get("group", 1)) == conv.groups
            and tuple(attrs.get("pads", (0, 0, 0, 0)))[:2] == tuple(conv.padding))
    if not same:
        raise ValueError(f"graph node {node} (weight {tuple(weight.shape)}, {attrs}) does not match {name} "
                         f"(weight {tuple(conv.weight.shape)}, stride {conv.stride}, groups {conv.groups}): the "
                         "graph is not this architecture")


def convert_folded_onnx(path: str | Path, model: nn.Module, input_size: tuple[int, int]) -> dict[str, Tensor]:
    """The state dict of ``model`` (any zoo model whose convolutions are ``Conv2d`` optionally followed by a
    ``BatchNorm2d`` named ``bn`` beside a ``conv``) carrying the weights of the folded ONNX graph at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    graph = _graph_convs(path)
    calls = _conv_calls(model, input_size)
    if len(graph) != len(calls):
        raise ValueError(f"{path} has {len(graph)} convolutions but the model calls {len(calls)}: not this "
                         "architecture")
    modules = dict(model.named_modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for (node, weight, bias, attrs), (name, conv) in zip(graph, calls):
        _check_pair(node, attrs, weight, name, conv)
        state[f"{name}.weight"] = weight
        parent, _, leaf = name.rpartition(".")
        bn = modules.get(f"{parent}.bn") if leaf == "conv" else None
        if isinstance(bn, nn.BatchNorm2d):
            state[f"{parent}.bn.weight"] = torch.ones_like(state[f"{parent}.bn.weight"])
            state[f"{parent}.bn.bias"] = bias if bias is not None else torch.zeros_like(state[f"{parent}.bn.bias"])
            state[f"{parent}.bn.running_mean"] = torch.zeros_like(state[f"{parent}.bn.running_mean"])
            state[f"{parent}.bn.running_var"] = torch.full_like(state[f"{parent}.bn.running_var"], 1.0 - bn.eps)
        elif conv.bias is not None:
            if bias is None:
                raise ValueError(f"graph node {node} has no bias but {name} has one")
            state[f"{name}.bias"] = bias
        elif bias is not None:
            raise ValueError(f"graph node {node} carries a bias that {name} has nowhere to put (no BatchNorm)")
    return state


def convert_spec(spec: ModelSpec, src: str | Path, dst: str | Path) -> Path:
    """Convert the folded ONNX ``src`` for registry entry ``spec`` and write our safetensors file ``dst``."""
    from .. import models
    from ..categories import get_categories
    from ..checkpoint import save_weights

    names = list(get_categories(spec.categories))
    model = models.build(spec.arch, len(names) + spec.label_offset, preprocessing=spec.preprocessing,
                         **spec.build_kwargs)
    pre = spec.preprocessing
    state = convert_folded_onnx(src, model, (pre.min_size, pre.max_size))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return save_weights(state, dst, {"arch": spec.arch, "model": spec.name, "categories": names,
                                     "converted_from": Path(src).name})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.convert.onnx_folded", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="registry name whose architecture and categories the graph has")
    parser.add_argument("src", type=Path, help="the ONNX file")
    parser.add_argument("dst", type=Path, help="the safetensors file to write")
    args = parser.parse_args(argv)
    try:
        out = convert_spec(get_spec(args.model), args.src, args.dst)
    except (LookupError, ValueError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

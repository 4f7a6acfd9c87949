"""Conv-BN folding: an eval-mode BatchNorm that directly follows a convolution becomes part of its weights.

``bn(conv(x))`` is affine in ``x`` with frozen statistics, so one convolution computes it
(weights and bias rescaled in fp64, then cast back). The pass works on a ``torch.fx``
graph of the module; timm's ``BatchNormAct2d`` keeps its activation; a module fx cannot
trace is returned unchanged.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import Tensor, nn


def _fold_weights(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` with eval-mode BatchNorm statistics (fp64 arithmetic)."""
    fused = copy.deepcopy(conv)
    w = conv.weight.detach().double()
    b = (
        conv.bias.detach().double()
        if conv.bias is not None
        else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    )
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma * torch.rsqrt(var + bn.eps)
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(dtype), requires_grad=False)
    fused.bias = nn.Parameter(((b - mean) * scale + beta).to(dtype), requires_grad=False)
    return fused


class _AfterFoldedBN(nn.Module):
    """What is left of a timm ``BatchNormAct2d`` once its BatchNorm is folded: drop, then act."""

    def __init__(self, bn: nn.Module) -> None:
        super().__init__()
        self.drop = getattr(bn, "drop", nn.Identity())
        self.act = getattr(bn, "act", nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(x))


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def fold_conv_bn(module: nn.Module) -> tuple[nn.Module, int]:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d (whose output has no
    other user) into the conv.  Returns ``(module, folds)``; ``module`` is a
    ``torch.fx.GraphModule`` sharing the untouched weights with the input, or the input
    itself (``folds == 0``) when it cannot be traced.  Call on an eval-mode module."""

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            # BatchNorms and convolutions (timm's "same"-padding Conv2dSame included) stay whole
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Conv2d)):
                return True
            return super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(module)
    except Exception:  # control flow fx cannot trace: leave the backbone as it is
        return module, 0
    gm = fx.GraphModule(module, graph)
    modules = dict(gm.named_modules())
    folds = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        bn = modules[node.target]
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv = modules.get(src.target)
        # any Conv2d (subclasses pad their input first): bn(conv(x)) stays affine in the weights
        if not isinstance(conv, nn.Conv2d) or bn.training or bn.running_mean is None or bn.running_var is None:
            continue
        if conv.out_channels != bn.num_features:
            continue
        _set_submodule(gm, src.target, _fold_weights(conv, bn))
        if type(bn) is nn.BatchNorm2d:
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
        else:  # BatchNormAct2d and friends: keep the activation (and drop) part
            _set_submodule(gm, node.target, _AfterFoldedBN(bn))
        folds += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, folds

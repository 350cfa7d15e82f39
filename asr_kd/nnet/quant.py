"""int8 students: fake quantisation for quantisation-aware training, and dynamic int8 for inference.

Deployment target: PyTorch's dynamic int8 (`torch.ao.quantization.quantize_dynamic` on the Linear
layers): weights int8 symmetric per tensor, activations quantised per batch from their min/max.
Quantisation-aware training should simulate exactly that, so the fake quantisation here is a
minimal one written for it rather than eager-mode QAT (`prepare_qat`), whose default qconfig
simulates STATIC quantisation (activation ranges learned by observers during training), a
different int8 model than the one deployed, and whose eager API torch marks as deprecated in
favour of torchao. `FakeQuantLinear` rounds its weight (per-tensor symmetric, qint8) and its
input (per-batch affine, quint8 with reduce_range as fbgemm's dynamic kernels do) with
`torch.fake_quantize_per_tensor_affine`, whose backward is the straight-through estimator.

`int8_dynamic` is the one call of `quantize_dynamic` (the kinds table's int8 rows and the deploy
stage's int8 backend both use it).
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

QMAX_WEIGHT = 127  # qint8 symmetric
QMAX_ACT = 127  # quint8 with reduce_range (7 bits): what fbgemm's dynamic Linear uses on x86


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    scale = (w.detach().abs().max() / QMAX_WEIGHT).clamp_min(1e-8)
    return torch.fake_quantize_per_tensor_affine(w, float(scale), 0, -QMAX_WEIGHT, QMAX_WEIGHT)


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.detach().min().clamp_max(0.0), x.detach().max().clamp_min(0.0)  # the range holds 0, as torch's
    scale = float(((hi - lo) / QMAX_ACT).clamp_min(1e-8))
    zero_point = int(torch.round(-lo / scale).clamp(0, QMAX_ACT))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, QMAX_ACT)


class FakeQuantLinear(nn.Linear):
    """A Linear whose forward sees int8-rounded weights and inputs (same parameters and state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_quant_activation(x), fake_quant_weight(self.weight), self.bias)


def fake_quantize_linears(model: nn.Module) -> nn.Module:
    """Make every nn.Linear of `model` a FakeQuantLinear in place (its weights and state dict unchanged)."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FakeQuantLinear
    return model


def int8_dynamic(model: nn.Module) -> nn.Module:
    """A dynamic-int8 copy of `model` (CPU): Linear weights int8, activations quantised per batch."""
    with warnings.catch_warnings():  # torch 2.13 warns that torch.ao.quantization moves to torchao; it still works
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear},
                                                      dtype=torch.qint8)

"""The acoustic model as one function, context windows -> log-likelihoods, for every backend.

`AcousticModel` wraps a trained network and the log state priors: log_softmax(net(x)) - log prior
(`asr_kd.nnet.infer.log_priors`, the same floor and barring as `compute-loglikes`), so a
TorchScript or ONNX file alone gives the decoder its input.

- TorchScript (`torch.jit.trace`: the models are straight-line MLPs / convolutions).
- ONNX with PyTorch's TorchScript-based exporter (`dynamo=False`): the dynamo exporter needs
  onnxscript, which the `onnx` extra does not pull in; the classic one covers these layers. A
  dynamic batch axis, opset 17.
- int8: PyTorch's post-training dynamic quantisation (`torch.ao.quantization.quantize_dynamic`)
  of the Linear layers: weights stored int8, activations quantised per batch on the fly. It needs
  no calibration data and suits MLPs on CPU, whose time is all in the Linear layers (fbgemm/x86
  kernels); static quantisation would need calibration sets and gains little more for matrix
  products this size. (PyTorch marks torch.ao quantisation deprecated in favour of torchao, which
  is not installed here; the warning is silenced. onnxruntime's `quantize_dynamic` is the same
  method for the ONNX file and could replace it.)
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asr_kd.nnet.infer import log_priors
from asr_kd.nnet.models import ModelSpec, load_model
from asr_kd.nnet.quant import int8_dynamic

ONNX_OPSET = 17


class AcousticModel(nn.Module):
    """(B, window*dim) context windows -> (B, num_pdfs) log-likelihoods (log posterior - log prior)."""

    def __init__(self, net: nn.Module, log_prior: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("log_prior", log_prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.net(x), dim=-1) - self.log_prior


def acoustic_model(model_file: str | Path, priors_file: str | Path) -> tuple[AcousticModel, ModelSpec]:
    """The fp32 AcousticModel (eval mode) of a final.pt / model.pt and a priors.npy."""
    net, spec = load_model(model_file)
    return AcousticModel(net, log_priors(np.load(priors_file), spec.num_pdfs)).eval(), spec


def quantize_int8(am: AcousticModel) -> nn.Module:
    """Dynamic int8 quantisation of the Linear layers (see the module docstring for why)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")  # the deprecation, as a UserWarning
        return int8_dynamic(am)


def export_torchscript(model_file: Path, priors_file: Path, out: Path) -> None:
    am, spec = acoustic_model(model_file, priors_file)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, but still the portable format
        traced = torch.jit.trace(am, torch.zeros(2, spec.input_dim))
    traced.save(str(out))


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model_file: Path, priors_file: Path, out: Path) -> None:
    am, spec = acoustic_model(model_file, priors_file)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # the classic exporter, on purpose (docstring)
        torch.onnx.export(am, (torch.zeros(2, spec.input_dim),), str(out), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["windows"], output_names=["loglikes"],
                          dynamic_axes={"windows": {0: "frames"}, "loglikes": {0: "frames"}})

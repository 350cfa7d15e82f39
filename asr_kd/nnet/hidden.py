"""Hidden activations of a frame classifier, and students initialised from a teacher's layers.

Feature-based distillation (FitNets hints, DistilBERT's cosine term, similarity-preserving KD)
matches hidden layers, not logits. Rather than give every architecture a second forward
(`forward(x, return_hidden=True)`), the hidden layers are read with forward hooks: hidden layer i
is the output of the model's i-th ReLU, which for `dnn` is hidden block i and for `tdnn` the conv
layers then the head's hidden layer. Any model in MODELS, trained alone or wrapped, works
unchanged, and the trainer's forward is the one that is hooked (no second pass).

`init_from_teacher` is DistilBERT's initialisation (Sanh et al. 2019): a shallower `dnn` takes a
chosen subset of a deeper `dnn` teacher's hidden blocks, in order, and the teacher's output layer
and input normalisation.
"""
from __future__ import annotations

import torch
from torch import nn

from asr_kd.errors import AsrKdError


def hidden_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the hidden layers (each ReLU), input side first."""
    return [m for m in model.modules() if isinstance(m, nn.ReLU)]


def layer_index(model: nn.Module, index: int, what: str) -> int:
    """`index` (negative counts from the last hidden layer) checked against the model's hidden layers."""
    n = len(hidden_modules(model))
    if not -n <= index < n:
        raise AsrKdError(f"{what}: hidden layer {index} does not exist; the model has {n} (0..{n - 1}, or -1 = last)")
    return index % n


class HiddenCapture:
    """Keeps the output of hidden layer `index` of `model` from its latest forward, as (B, features)."""

    def __init__(self, model: nn.Module, index: int, what: str = "hidden layer"):
        self.index = layer_index(model, index, what)
        self.output: torch.Tensor | None = None
        self._handle = hidden_modules(model)[self.index].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.output = output.flatten(1)

    def take(self) -> torch.Tensor:
        """The captured activations (raises if the model has not run since the last take)."""
        if self.output is None:
            raise AsrKdError(f"hidden layer {self.index}: nothing captured (the model did not run on this batch)")
        out, self.output = self.output, None
        return out

    def remove(self) -> None:
        self._handle.remove()


def hidden_width(model: nn.Module, index: int, input_dim: int) -> int:
    """Number of features of hidden layer `index` (one dry forward of a zero window)."""
    capture = HiddenCapture(model, index)
    try:
        with torch.no_grad():
            param = next(model.parameters())
            model(torch.zeros(1, input_dim, device=param.device, dtype=param.dtype))
        return capture.take().shape[1]
    finally:
        capture.remove()


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module, layers: list[int]) -> None:
    """Copy teacher hidden blocks `layers[j]` into student block j, and the output layer and input
    normalisation; both must be `dnn` models (Linear per block) with matching shapes."""
    s_lin, t_lin = linear_layers(student), linear_layers(teacher)
    if len(layers) != len(s_lin) - 1:
        raise AsrKdError(f"init_layers {layers}: the student has {len(s_lin) - 1} hidden layers; give one teacher "
                         f"layer per student layer")
    pairs = [(s_lin[j], t_lin[layer_index(teacher, i, 'init_layers')]) for j, i in enumerate(layers)]
    pairs.append((s_lin[-1], t_lin[-1]))
    for j, (s, t) in enumerate(pairs):
        if s.weight.shape != t.weight.shape:
            raise AsrKdError(f"init_layers {layers}: student layer {j} is {tuple(s.weight.shape)} but the teacher's "
                             f"is {tuple(t.weight.shape)} (same width needed; the first student layer must take "
                             f"teacher layer 0, which reads the input window)")
        s.weight.copy_(t.weight)
        s.bias.copy_(t.bias)
    s_norm, t_norm = getattr(student, "norm", None), getattr(teacher, "norm", None)
    if s_norm is not None and t_norm is not None:
        s_norm.load_state_dict(t_norm.state_dict())

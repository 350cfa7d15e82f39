"""Frame classifiers: context window (B, window*dim) -> logits over pdfs (B, num_pdfs).

Architectures are chosen by name from MODELS, an explicit table of builders:

- `dnn`: the paper's model (Hinton et al. 2015 §4: 8 hidden layers x 2560 ReLU) and the small
  students (e.g. 2 x 512): `hidden_layers` x (Linear, optional LayerNorm/BatchNorm, ReLU, dropout).
- `tdnn`: 1-D convolutions over the window's time axis (kernel `tdnn_kernel`, one layer per
  entry of `tdnn_dilations`, `hidden_dim` channels), then one hidden linear layer over what
  remains of the window: a Kaldi-style TDNN restricted to the window, for comparison.

A trained model is stored as final.pt = {"state_dict", "spec": ModelSpec as dict}; `load_model`
rebuilds it from the spec alone.

Every model is a plain nn.Module with no in-place buffer updates except BatchNorm, so members
without BatchNorm can be stacked and trained together (ensemble.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from asr_kd.config import from_dict, require
from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path


@dataclass
class ModelConfig:
    name: str = "dnn"  # a key of MODELS
    hidden_layers: int = 2
    hidden_dim: int = 512
    norm: str = "none"  # none | layer | batch
    dropout: float = 0.0
    tdnn_kernel: int = 3
    tdnn_dilations: list[int] = field(default_factory=lambda: [1, 1, 2])

    def __post_init__(self):
        require(self.hidden_layers >= 0, f"model.hidden_layers must be >= 0, got {self.hidden_layers}")
        require(self.hidden_dim >= 1, f"model.hidden_dim must be >= 1, got {self.hidden_dim}")
        require(0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout}")
        require(self.norm in ("none", "layer", "batch"), f"model.norm {self.norm!r}: expected none | layer | batch")
        require(self.tdnn_kernel >= 1 and all(d >= 1 for d in self.tdnn_dilations),
                f"model.tdnn_kernel and tdnn_dilations must be >= 1, got {self.tdnn_kernel}, {self.tdnn_dilations}")


def _norm(kind: str, dim: int) -> list[nn.Module]:
    if kind == "none":
        return []
    if kind == "layer":
        return [nn.LayerNorm(dim)]
    if kind == "batch":
        return [nn.BatchNorm1d(dim)]
    raise AsrKdError(f"model.norm: unknown {kind!r}; known: none, layer, batch")


def _hidden_block(cfg: ModelConfig, in_dim: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(in_dim, cfg.hidden_dim), *_norm(cfg.norm, cfg.hidden_dim), nn.ReLU()]
    if cfg.dropout > 0:
        layers.append(nn.Dropout(cfg.dropout))
    return layers


def build_dnn(cfg: ModelConfig, input_dim: int, num_pdfs: int, feat_dim: int) -> nn.Module:
    layers: list[nn.Module] = []
    width = input_dim
    for _ in range(cfg.hidden_layers):
        layers += _hidden_block(cfg, width)
        width = cfg.hidden_dim
    layers.append(nn.Linear(width, num_pdfs))
    return nn.Sequential(*layers)


class TDNN(nn.Module):
    """Dilated 1-D convolutions over the window (valid padding), then an MLP head."""

    def __init__(self, cfg: ModelConfig, input_dim: int, num_pdfs: int, feat_dim: int):
        super().__init__()
        self.feat_dim = feat_dim
        window = input_dim // feat_dim
        convs: list[nn.Module] = []
        channels = feat_dim
        for d in cfg.tdnn_dilations:
            window -= d * (cfg.tdnn_kernel - 1)
            convs += [nn.Conv1d(channels, cfg.hidden_dim, cfg.tdnn_kernel, dilation=d), nn.ReLU()]
            channels = cfg.hidden_dim
        if window < 1:
            raise AsrKdError(f"model tdnn: kernel {cfg.tdnn_kernel} with dilations {cfg.tdnn_dilations} "
                             f"needs a wider window than {input_dim // feat_dim} frames")
        self.convs = nn.Sequential(*convs)
        self.head = nn.Sequential(*_hidden_block(cfg, channels * window), nn.Linear(cfg.hidden_dim, num_pdfs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.reshape(*x.shape[:-1], -1, self.feat_dim).transpose(-1, -2)  # (B, dim, window)
        return self.head(self.convs(frames).flatten(-2))


class InputNorm(nn.Module):
    """Global per-dimension mean/variance normalisation of each frame of the window (Kaldi nnet1's
    feature_transform). Stored features are only per-speaker mean-normalised; the stats travel in
    the state dict, so a loaded model normalises its input itself."""

    def __init__(self, feat_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(feat_dim))
        self.register_buffer("inv_std", torch.ones(feat_dim))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.inv_std.copy_(1.0 / std.clamp(min=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.reshape(*x.shape[:-1], -1, self.mean.numel())
        return ((frames - self.mean) * self.inv_std).reshape(x.shape)


class Normalized(nn.Module):
    """`net` applied to normalised input."""

    def __init__(self, net: nn.Module, feat_dim: int):
        super().__init__()
        self.norm = InputNorm(feat_dim)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


MODELS: dict[str, Callable[[ModelConfig, int, int, int], nn.Module]] = {
    "dnn": build_dnn,
    "tdnn": TDNN,
}


def build_model(cfg: ModelConfig, input_dim: int, num_pdfs: int, feat_dim: int | None = None) -> nn.Module:
    """The registered architecture `cfg.name` for windows of `input_dim` = window * feat_dim values."""
    if cfg.name not in MODELS:
        raise AsrKdError(f"model.name: unknown architecture {cfg.name!r}; known: {sorted(MODELS)}")
    if feat_dim is None:
        feat_dim = input_dim
    if input_dim % feat_dim:
        raise AsrKdError(f"model: input_dim {input_dim} is not a multiple of feat_dim {feat_dim}")
    return MODELS[cfg.name](cfg, input_dim, num_pdfs, feat_dim)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_frame(model: nn.Module) -> int:
    """Forward FLOPs per frame of the linear layers (2 per multiply-add); convolutions are counted
    through their weight size times output positions, so MFU numbers are for dnn models."""
    return sum(2 * m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def stackable(cfg: ModelConfig) -> bool:
    """Whether members of this architecture can be trained as stacked weights (no BatchNorm buffers)."""
    return cfg.norm != "batch"


@dataclass
class ModelSpec:
    """What a trained model needs to be applied: architecture, window and output size."""

    model: ModelConfig
    feat_dim: int
    left_context: int
    right_context: int
    num_pdfs: int
    input_norm: bool = False  # the model starts with InputNorm (a `Normalized` wrapper)
    tree_sha256: str | None = None  # the tree its pdf ids come from (the alignment's); None: unrecorded

    @property
    def input_dim(self) -> int:
        return (self.left_context + 1 + self.right_context) * self.feat_dim

    def build(self) -> torch.nn.Module:
        net = build_model(self.model, self.input_dim, self.num_pdfs, self.feat_dim)
        return Normalized(net, self.feat_dim) if self.input_norm else net

    @property
    def input_spec(self) -> dict:
        """What the model reads: equal input specs = members can share one window batch."""
        return {"feat_dim": self.feat_dim, "left_context": self.left_context, "right_context": self.right_context}

    def get(self, key: str, default=None):
        """Dict-style read (`spec.get("input_spec")`), for callers that treat the stored spec as a dict."""
        return getattr(self, key, default)


def init_model(spec: ModelSpec, seed: int, feat_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Module:
    """Build the model with initial weights drawn from `seed` alone (so members are reproducible);
    `feat_stats` (mean, std) of the training features set its InputNorm."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
    if spec.input_norm:
        if feat_stats is None:
            raise AsrKdError("init_model: a model with input_norm needs the training features' (mean, std)")
        model.norm.set_stats(*feat_stats)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelSpec]:
    """A trained model (in eval mode) from an exp dir or a final.pt file, with its ModelSpec."""
    path = Path(path)
    file = path / "final.pt" if path.is_dir() else path
    if not file.is_file():
        raise AsrKdError(f"{file}: no trained model (did training finish?)")
    blob = load_torch(file, "model", map_location=device, weights_only=True)
    try:
        spec = spec_from_dict(blob["spec"])
    except (KeyError, TypeError) as e:
        raise AsrKdError(f"{file}: not a model file of this project (no valid spec: {e})") from None
    model = spec.build().to(device)
    load_state(model, blob["state_dict"], file)
    return model.eval(), spec


def load_torch(file: str | Path, what: str, **kwargs) -> dict:
    """torch.load, with a truncated or corrupt file named in one line (torch's own errors name none)."""
    try:
        blob = torch.load(file, **kwargs)
    except FileNotFoundError:
        raise AsrKdError(f"{file}: {what} file not found") from None
    except Exception as e:  # noqa: BLE001 (zip, pickle, EOF and unpickling errors all mean the same here)
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise AsrKdError(f"{file}: corrupt or truncated {what} file ({first}); re-run the step that wrote it") from None
    if not isinstance(blob, dict):
        raise AsrKdError(f"{file}: not a {what} file of this project (holds a {type(blob).__name__})")
    return blob


def load_state(module: torch.nn.Module, state: dict, file: str | Path) -> None:
    """load_state_dict, a shape mismatch (another pdf count, width or depth) named with its file."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln or "Missing" in ln or "Unexpected" in ln]
        raise AsrKdError(f"{file}: weights do not fit this model ({lines[0] if lines else 'state mismatch'}); "
                         "it was made for another number of pdfs or another architecture") from None


def save_torch(obj, path: str | Path) -> None:
    """torch.save atomically; a failed write (a full disk) is one line naming the file, and the old file stays."""
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AsrKdError(f"{path}: cannot write ({first}); is the disk full? Free space and re-run "
                         "(the previous file, if any, is intact)") from None


def save_final(path: Path, state_dict: dict, spec: ModelSpec) -> None:
    save_torch({"state_dict": state_dict, "spec": dataclasses.asdict(spec)}, path)


def spec_from_dict(d: dict) -> ModelSpec:
    d = dict(d)
    d["model"] = from_dict(ModelConfig, d["model"], "spec.model")
    return ModelSpec(**d)

"""Ensembles of frame classifiers: training K members, and combining their posteriors.

Training (`train_ensemble`): members differ by seed (init weights AND frame order) and optionally
by architecture. Members of one architecture train in ONE process as stacked weights: their
parameters are stacked along a new leading axis (torch.func.stack_module_state) and one
vmap-ed functional call runs all K forward/backward passes as batched matmuls, each member on
its own shuffled minibatch. Each member is its own optimizer param group (views of its slice of
the stacked tensors), so each keeps its own learning rate, newbob halvings, early stop and best
epoch, exactly as if trained alone: a member that has stopped gets no more updates while the others
go on, and its final.pt is its own best dev epoch. Gradient clipping is per member. `stacked=False`
(or BatchNorm, whose running-stat updates cannot be vmap-ed) trains members one after another.
Member k's initial weights and frame order depend only on its seed, so a stacked member starts
exactly where a separately trained one would.

Layout: `<exp>/ensemble.json` (member dirs, seeds, architectures), `<exp>/member_<i>/final.pt`
(loadable like any single model), and per stacked group `<exp>/group_<g>/` holding the shared
checkpoints and metrics.jsonl (lists = one value per member).

Several GPUs: launch the same command with `torchrun --nproc_per_node=G -m asr_kd train-ensemble ...`;
`distributed_members` gives rank r every G-th member (r, r+G, ...) and each rank trains its share
on its own GPU (`cuda:LOCAL_RANK`) into the same exp dir. Members are independent, so no gradient
all-reduce is needed; rank 0 writes ensemble.json after a barrier. With world size 1 (or no
torchrun) this is the plain single-process path.

Combination (`Ensemble.log_posteriors`): "arith" = log mean_k softmax(z_k / T) (the paper's
averaged predictions); "geo" = log_softmax(mean_k z_k / T), the normalised geometric mean, which
can be cached as mean logits and re-tempered for any T.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state, vmap

from asr_kd.config import to_dict
from asr_kd.errors import AsrKdError
from asr_kd.expdir import ExpDir
from asr_kd.io import read_json, write_json
from asr_kd.nnet.devices import distributed_rank, rank_device, resolve_device
from asr_kd.nnet.frames import FrameData
from asr_kd.nnet.models import ModelConfig, stackable
from asr_kd.nnet.train import (Frames, ModelSpec, TrainConfig, best_member_states, init_model, load_model, make_spec,
                               run_training, save_final, train_frame_classifier)

log = logging.getLogger(__name__)

COMBINE = ("arith", "geo")


# ---------------------------------------------------------------- stacked training ----------
class StackedLearner:
    """K same-architecture members as stacked parameters, run with vmap."""

    def __init__(self, models: list[torch.nn.Module]):
        self.k = len(models)
        params, buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture, without weights
        self.module = _StackedParams(self.base)  # holds the stacked tensors: parameters(), train()/eval()
        self.names = list(params)
        for i, name in enumerate(self.names):
            self.module.register_parameter(f"p{i}", torch.nn.Parameter(params[name]))
        self.buffers = buffers
        self._views: list[list[torch.Tensor]] | None = None

    def params(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self.module, f"p{i}") for i, name in enumerate(self.names)}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        def call(p, b, xx):
            return functional_call(self.base, (p, b), (xx,))

        return vmap(call, randomness="different")(self.params(), self.buffers, x)

    def member_params(self) -> list[list[torch.Tensor]]:
        """Member k's parameters as views of slice k of the stacked tensors: one optimizer param group
        per member gives each its own LR (an optimizer step on a view updates the stack in place)."""
        if self._views is None:
            self._views = [[p.data[k] for p in self.params().values()] for k in range(self.k)]
        return self._views

    def member_grads(self, active: list[bool]) -> None:
        """Slice k of each stacked gradient to member k's views; a stopped member gets none (no update)."""
        for i, p in enumerate(self.params().values()):
            for k, views in enumerate(self.member_params()):
                views[i].grad = p.grad[k] if active[k] and p.grad is not None else None

    def clip_grad(self, max_norm: float) -> None:
        grads = [p.grad for p in self.params().values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (K,)
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))

    def state_dict(self) -> dict:
        return {name: t.detach().clone() for name, t in {**self.params(), **self.buffers}.items()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for name, t in {**self.params(), **self.buffers}.items():
                t.copy_(state[name])

    def member_states(self, state: dict) -> list[dict]:
        return [{name: t[k].clone() for name, t in state.items()} for k in range(self.k)]


class _StackedParams(torch.nn.Module):
    """Owns the stacked parameters; train()/eval() also switch the (unregistered) base module."""

    def __init__(self, base: torch.nn.Module):
        super().__init__()
        self._base = [base]  # a list, so its meta-device parameters stay out of parameters()

    def train(self, mode: bool = True):
        self._base[0].train(mode)
        return super().train(mode)


def member_seeds(cfg: TrainConfig, k: int) -> list[int]:
    """Seeds of K members: cfg.seed, cfg.seed + 1, ... (member i's init and shuffling)."""
    return [cfg.seed + i for i in range(k)]


def train_ensemble(cfg: TrainConfig, k: int, train: Frames, dev: Frames, exp_dir: str | Path, *,
                   architectures: list[ModelConfig] | None = None, stacked: bool = True) -> list[Path]:
    """Train k members per architecture (default: cfg.model) into exp_dir; returns member dirs."""
    if k < 1:
        raise AsrKdError(f"ensemble size k must be >= 1, got {k}")
    exp_dir = Path(exp_dir)
    archs = architectures or [cfg.model]
    members = [(a, s) for a in archs for s in member_seeds(cfg, k)]
    rank, world = distributed_rank()
    device = resolve_device(cfg.device) if world == 1 else rank_device()
    train, dev = train.to(device), dev.to(device)
    mine = [i for i in range(len(members)) if i % world == rank]
    for g, arch in enumerate(archs):
        group = [i for i in mine if members[i][0] is arch]
        if not group:
            continue
        group_cfg = dataclasses.replace(cfg, model=arch, device=str(device))
        if stacked and stackable(arch) and len(group) > 1:
            group_dir = exp_dir / (f"group_{g}" if world == 1 else f"group_{g}_rank{rank}")
            train_stacked(group_cfg, [members[i][1] for i in group], train, dev, group_dir,
                          [member_dir(exp_dir, i) for i in group])
        else:
            for i in group:
                train_frame_classifier(dataclasses.replace(group_cfg, seed=members[i][1]), train, dev,
                                       exp_dir=member_dir(exp_dir, i))
    dirs = [member_dir(exp_dir, i) for i in range(len(members))]
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        write_json(exp_dir / "ensemble.json", {
            "members": [d.name for d in dirs], "seeds": [s for _, s in members],
            "architectures": [to_dict(a) for a, _ in members]})
    if world > 1:
        torch.distributed.destroy_process_group()
    return dirs


def member_dir(exp_dir: Path, i: int) -> Path:
    return exp_dir / f"member_{i}"


def train_stacked(cfg: TrainConfig, seeds: list[int], train: Frames, dev: Frames,
                  group_dir: Path, out_dirs: list[Path]) -> None:
    """One stacked run for all `seeds`; then each member's best weights go to out_dirs[i]/final.pt."""
    spec = make_spec(cfg, train, dev, None)
    stats = train.feature_stats()
    learner = StackedLearner([init_model(spec, s, stats).to(train.device) for s in seeds])
    result = run_training(learner, cfg, train, dev, ExpDir(group_dir), spec, seeds)
    for state, out, acc, best in zip(best_member_states(result, learner), out_dirs, result.dev_frame_acc,
                                     result.best_epochs):
        out.mkdir(parents=True, exist_ok=True)
        save_final(out / "final.pt", state, spec)
        write_json(out / "member.json", {"group_dir": str(group_dir), "best_epoch": best, "dev_frame_acc": acc})


# ---------------------------------------------------------------- inference -----------------
class Ensemble:
    """K trained members (possibly of different architectures and windows) combined per frame."""

    def __init__(self, members: list[tuple[torch.nn.Module, ModelSpec]]):
        if not members:
            raise AsrKdError("an ensemble needs at least one member")
        pdfs = {spec.num_pdfs for _, spec in members}
        dims = {spec.feat_dim for _, spec in members}
        if len(pdfs) != 1 or len(dims) != 1:
            raise AsrKdError(f"ensemble members disagree on pdfs {sorted(pdfs)} or feature dims {sorted(dims)}")
        self.members = members
        self.sources: list[Path] = []  # final.pt files, when loaded from disk
        trees = {spec.tree_sha256 for _, spec in members if spec.tree_sha256}
        if len(trees) > 1:
            raise AsrKdError(f"ensemble members come from different trees {sorted(t[:16] for t in trees)}: their pdf "
                             f"ids mean different states")
        self.tree_sha256 = trees.pop() if trees and all(s.tree_sha256 for _, s in members) else None
        self._groups: list[MemberGroup] | None = None
        self.num_pdfs = pdfs.pop()
        self.feat_dim = members[0][1].feat_dim

    @classmethod
    def load(cls, dirs: list[str | Path] | str | Path, device: str | torch.device = "cpu") -> "Ensemble":
        """From model dirs / final.pt files, or one ensemble dir (with ensemble.json)."""
        if isinstance(dirs, (str, Path)):
            dirs = [dirs]
        paths: list[Path] = []
        for d in map(Path, dirs):
            if (d / "ensemble.json").is_file():
                paths += [d / name for name in read_json(d / "ensemble.json")["members"]]
            else:
                paths.append(d)
        ens = cls([load_model(p, device) for p in paths])
        ens.sources = [p / "final.pt" if p.is_dir() else p for p in paths]
        return ens

    def __len__(self) -> int:
        return len(self.members)

    def describe(self) -> str:
        """How errors name this ensemble: its model files, or its size when built in memory."""
        if self.sources:
            return "model " + ", ".join(map(str, self.sources[:3])) + (" ..." if len(self.sources) > 3 else "")
        return f"model ({len(self.members)} member(s) in memory)"

    def to(self, device: str | torch.device) -> "Ensemble":
        for model, _ in self.members:
            model.to(device)
        self._groups = None  # stacked again on the new device at the next call
        return self

    def groups(self) -> list["MemberGroup"]:
        """Members of one architecture and window, each group run as one stacked call (see MemberGroup)."""
        groups = self._groups
        if groups is None or any(g.stale() for g in groups):
            by_spec: dict[str, list[int]] = {}
            for i, (_, spec) in enumerate(self.members):
                key = repr(spec) if stackable(spec.model) else f"{i}:{spec!r}"  # BatchNorm members run alone
                by_spec.setdefault(key, []).append(i)
            groups = self._groups = [MemberGroup([self.members[i][0] for i in ids], self.members[ids[0]][1], ids)
                                     for ids in by_spec.values()]
        return groups

    @torch.no_grad()
    def logits(self, data: FrameData, frame_index: torch.Tensor) -> torch.Tensor:
        """(K, B, P) member logits for the given global frame ids of `data`: one call per group."""
        if data.dim != self.feat_dim:
            raise AsrKdError(f"{data.name}: feature dim {data.dim}, but the ensemble reads {self.feat_dim}")
        out: list[torch.Tensor | None] = [None] * len(self)
        windows: dict[tuple[int, int], torch.Tensor] = {}  # groups with the same window share one gather
        for group in self.groups():
            key = (group.spec.left_context, group.spec.right_context)
            if key not in windows:
                windows[key] = data.windows(frame_index, *key)
            for i, z in zip(group.member_ids, group.logits(windows[key])):
                out[i] = z
        return torch.stack(out).to(data.device)

    def log_posteriors(self, data: FrameData, frame_index: torch.Tensor | None = None, temperature: float = 1.0,
                       combine: str = "arith", batch_size: int = 8192) -> torch.Tensor:
        """(B, P) log of the combined posterior at temperature T (all frames of `data` if no ids given)."""
        if frame_index is None:
            frame_index = torch.arange(data.num_frames, device=data.device)
        return torch.cat([combine_logits(self.logits(data, frame_index[i:i + batch_size]), temperature, combine)
                          for i in range(0, len(frame_index), batch_size)])

    def posteriors(self, data: FrameData, frame_index: torch.Tensor | None = None, temperature: float = 1.0,
                   combine: str = "arith") -> torch.Tensor:
        return self.log_posteriors(data, frame_index, temperature, combine).exp()


class MemberGroup:
    """Inference for members of ONE architecture and window: K forwards in one vmap-ed call.

    The weights are stacked along a new leading axis (torch.func.stack_module_state, as
    StackedLearner does for training) and the members' own parameters become views of that stack,
    so the group costs no second copy of the weights. All members read the same windows
    (`in_dims=None`), so the input is not copied K times either.
    """

    def __init__(self, models: list[torch.nn.Module], spec: ModelSpec, member_ids: list[int]):
        self.models, self.spec, self.member_ids = models, spec, member_ids
        self.params = self.buffers = None
        if len(models) > 1:
            self.params, self.buffers = stack_module_state(models)
            for k, model in enumerate(models):
                for name, t in [*model.named_parameters(), *model.named_buffers()]:
                    t.data = (self.params.get(name) if name in self.params else self.buffers[name])[k]
            self.base = copy.deepcopy(models[0]).to("meta")

    def stale(self) -> bool:
        """A member was moved (e.g. `.to(device)`) since stacking: its weights no longer view the stack."""
        if self.params is None:
            return False
        name, stacked = next(iter(self.params.items()))
        return any(dict(m.named_parameters())[name].data_ptr() != stacked[k].data_ptr()
                   for k, m in enumerate(self.models))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(K_group, B, P) float32 logits of the group's members for windows `x` (B, input_dim)."""
        if self.params is None:
            model = self.models[0]
            device = next(model.parameters(), x).device  # a dynamic-int8 model has no parameters: runs where x is
            return model(x.to(device)).float()[None]
        first = next(iter(self.params.values()))

        def call(p, b, xx):
            return functional_call(self.base, (p, b), (xx,))

        return vmap(call, in_dims=(0, 0, None))(self.params, self.buffers, x.to(first.device)).float()


def combine_logits(logits: torch.Tensor, temperature: float = 1.0, combine: str = "arith") -> torch.Tensor:
    """(K, B, P) member logits -> (B, P) log combined posterior (see module docstring)."""
    if temperature <= 0:
        raise AsrKdError(f"temperature must be > 0, got {temperature}")
    if combine == "arith":
        logp = torch.log_softmax(logits / temperature, dim=-1)
        return torch.logsumexp(logp, dim=0) - math.log(logits.shape[0])
    if combine == "geo":
        return torch.log_softmax(logits.mean(0) / temperature, dim=-1)
    raise AsrKdError(f"combine: unknown {combine!r}; known: {', '.join(COMBINE)}")

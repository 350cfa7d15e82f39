"""Train frame classifiers on (features, pdf labels), Kaldi-nnet1 style, resumable after a kill.

    cfg = load_config(TrainConfig, "conf/dnn.yaml", ["lr=0.1"])
    train = FrameData.load("data/fbank/train", "exp/tri1_ali")
    dev = FrameData.load("data/fbank/dev", "exp/tri1_ali_dev")
    result = train_frame_classifier(cfg, train, dev, exp_dir="exp/dnn")
    model, spec = load_model("exp/dnn")

The exp dir holds config.yaml, command.txt, env.json, log/, metrics.jsonl (one line per epoch),
checkpoints/epoch_N.pt (model, optimizer, schedule, RNG and shuffling-generator states) and
final.pt (the best-dev-accuracy epoch's weights + ModelSpec). Rerunning the same command after a
kill resumes from the last checkpoint and, on CPU, ends with bit-identical weights.

Distillation plugs in through `loss_fn(logits, batch) -> (loss, metrics)` (docs/ARTIFACTS.md,
"Training-loss hook"); with a loss_fn every frame is visited (unlabelled transfer data too),
without one only labelled frames are, under hard-label cross-entropy.

The loop itself (`run_training`) is shared with the stacked ensemble trainer (ensemble.py): it
drives a "learner" holding K >= 1 members; a single model is K = 1.

`max_steps_per_epoch` caps an epoch at a fixed number of steps (on a very large set, an epoch
of the LR schedule and checkpoints is a fixed amount of work, as in icefall and Kaldi nnet3):
each capped epoch trains the first N batches of that epoch's frame order.

Frames reach the loop in one of two layouts. A resident `FrameData` (a set within
`cfg.data.max_resident_frames`): each member draws a permutation of all frames per epoch from
its checkpointed generator, exactly as before streaming existed. A `StreamedFrames` (stream.py):
chunks of whole utterances in a (seed, epoch) order, each member's in-chunk order from (member
seed, epoch, chunk). The layout is recorded in the checkpoint: it decides the frame order.

Data-parallel (`data_parallel=True` under torchrun, devices.py): every rank follows the same
frame order and takes its contiguous share of each global batch of `cfg.batch_size` frames
(so a run's numbers do not depend on the number of ranks); DistributedDataParallel averages the
gradients (each rank's loss weighted by its share, so an uneven last batch averages right); dev
metrics are summed over ranks before the LR schedule and early stopping see them; rank 0 alone
writes checkpoints, metrics, logs and final.pt, and every rank resumes from them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
import torch.nn.functional as F
from tqdm import tqdm

from asr_kd.config import require, to_dict
from asr_kd.errors import AsrKdError
from asr_kd.expdir import ExpDir
from asr_kd.io import write_text
from asr_kd.nnet.devices import SINGLE, Ranks, resolve_device, training_device  # noqa: F401 (re-export)
from asr_kd.nnet.frames import FrameBatch, FrameData, make_generator, shuffled
from asr_kd.nnet.models import (ModelConfig, ModelSpec, init_model, load_model, load_torch,  # noqa: F401 (re-export)
                                save_final, save_torch)
from asr_kd.nnet.stream import DataConfig, StreamedFrames, chunk_seed, labelled_ranges
from asr_kd.steps.tree import check_same_tree

Frames = FrameData | StreamedFrames

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, FrameBatch], "tuple[torch.Tensor, dict]"]
Prepare = Callable[[torch.nn.Module], "torch.nn.Module | None"]


class WithAux(torch.nn.Module):
    """A model plus trainable loss parameters (`aux`, e.g. a hint projection); forward is the model's."""

    def __init__(self, model: torch.nn.Module, aux: torch.nn.Module):
        super().__init__()
        self.model, self.aux = model, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @staticmethod
    def model_state(state: dict) -> dict:
        """The model's own entries of a WithAux state dict (what final.pt keeps)."""
        return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def stacked_loss(loss_fn) -> bool:
    """Whether `loss_fn` takes all K members' (K, B, P) logits and (K, B) batch (e.g. mutual learning)."""
    return getattr(loss_fn, "stacked", False)


DEFAULT_MIN_EPOCHS = 2


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    left_context: int = 5  # frames left of the centre (paper: 10)
    right_context: int = 5  # frames right of the centre (paper: 15)
    optimizer: str = "sgd"  # sgd (with momentum) | adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 15
    max_steps_per_epoch: int = 0  # 0 = whole epochs; N = an "epoch" ends after N steps (very large sets)
    schedule: str = "newbob"  # newbob | cosine
    newbob_threshold: float = 0.005  # halve the LR when dev frame accuracy improves less than this
    newbob_max_halvings: int = 4  # then stop
    min_epochs: int = DEFAULT_MIN_EPOCHS  # newbob never stops before this many epochs
    cosine_final_fraction: float = 0.01  # cosine decays the LR to lr * this at max_epochs
    warmup_steps: int = 0
    grad_clip: float = 5.0  # max gradient norm per member; 0 = off
    seed: int = 1  # model init and frame shuffling
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = True  # autocast to bfloat16 on CUDA (CPU always runs fp32)
    keep_checkpoints: int = 2  # last N epoch checkpoints kept (plus the best epoch's)
    eval_batch_size: int = 4096
    input_norm: bool = True  # global mean/variance normalisation of the input, stats from train
    data: DataConfig = field(default_factory=DataConfig)  # resident budget (stream.py)

    def __post_init__(self):
        """Range checks (config.py: from_dict names the file). min_epochs left at its default is
        capped at max_epochs (`max_epochs=1` alone stays valid); one set above max_epochs is an error."""
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        require(self.max_epochs >= 1, f"max_epochs must be >= 1, got {self.max_epochs}")
        require(self.min_epochs >= 0, f"min_epochs must be >= 0, got {self.min_epochs}")
        require(self.min_epochs <= max(self.max_epochs, DEFAULT_MIN_EPOCHS),
                f"min_epochs {self.min_epochs} > max_epochs {self.max_epochs}")
        require(self.left_context >= 0 and self.right_context >= 0,
                f"left_context/right_context must be >= 0, got {self.left_context}/{self.right_context}")
        require(self.momentum >= 0 and self.weight_decay >= 0,
                f"momentum/weight_decay must be >= 0, got {self.momentum}/{self.weight_decay}")
        require(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        require(self.warmup_steps >= 0 and self.keep_checkpoints >= 1,
                f"need warmup_steps >= 0 and keep_checkpoints >= 1, got {self.warmup_steps}/{self.keep_checkpoints}")
        require(0 < self.cosine_final_fraction <= 1 and self.newbob_threshold >= 0 and self.newbob_max_halvings >= 0,
                "need 0 < cosine_final_fraction <= 1, newbob_threshold >= 0, newbob_max_halvings >= 0")



@dataclass
class TrainResult:
    exp_dir: Path
    best_epoch: int
    dev_frame_acc: list[float]  # per member, at the best epoch
    last_epoch: int
    best_epochs: list[int] = field(default_factory=list)  # per member (stacked members stop on their own)


# ---------------------------------------------------------------- public API: one model ------
def train_frame_classifier(cfg: TrainConfig, train: Frames, dev: Frames, *,
                           loss_fn: LossFn | None = None, exp_dir: str | Path,
                           num_pdfs: int | None = None, data_parallel: bool = False,
                           prepare: Prepare | None = None) -> TrainResult:
    """Train one model into `exp_dir` (resuming if it holds checkpoints); writes final.pt.

    `data_parallel`: under torchrun, train this ONE model on all ranks with DDP (module docstring);
    without torchrun it is the plain single-process run. `prepare(model)`, called once on the
    freshly initialised model (before a resume restores its weights), may initialise it (e.g. from
    a teacher's layers), hook it, and return trainable loss parameters (e.g. a hint projection):
    they are optimised and checkpointed with the model (`WithAux`), but final.pt holds the model only.
    """
    ranks = Ranks.from_env() if data_parallel else SINGLE
    device = training_device(cfg.device) if data_parallel else resolve_device(cfg.device)
    train, dev = train.to(device), dev.to(device)
    spec = make_spec(cfg, train, dev, num_pdfs)
    model = init_model(spec, cfg.seed, train.feature_stats()).to(device)
    aux = prepare(model) if prepare is not None else None
    learner = SingleLearner(model if aux is None else WithAux(model, aux.to(device)), ranks)
    result = run_training(learner, cfg, train, dev, ExpDir(exp_dir), spec, [cfg.seed], loss_fn, ranks)
    if ranks.main:
        states = best_member_states(result, learner)
        save_final(Path(exp_dir) / "final.pt", states[0] if aux is None else WithAux.model_state(states[0]), spec)
    ranks.barrier()
    return result


def make_spec(cfg: TrainConfig, train: Frames, dev: Frames, num_pdfs: int | None) -> ModelSpec:
    num_pdfs = num_pdfs or train.num_pdfs or dev.num_pdfs
    if train.num_pdfs and dev.num_pdfs and train.num_pdfs != dev.num_pdfs:
        raise AsrKdError(f"{dev.name}: dev alignment has {dev.num_pdfs} pdfs, {train.name}'s {train.num_pdfs}")
    if not num_pdfs:
        raise AsrKdError(f"{train.name}: number of pdfs unknown (no alignment store given)")
    if train.dim != dev.dim:
        raise AsrKdError(f"{dev.name}: feature dim {dev.dim} differs from {train.name}'s {train.dim}")
    tree = check_same_tree([(f"alignment of {s.name}", getattr(s, "tree_sha256", None))
                            for s in (train, dev) if s.num_pdfs is not None])
    return ModelSpec(cfg.model, train.dim, cfg.left_context, cfg.right_context, int(num_pdfs), cfg.input_norm, tree)


# ---------------------------------------------------------------- learners ------------------
class Learner(Protocol):
    """K >= 1 members trained in lockstep on their own frame orders."""

    k: int
    module: torch.nn.Module  # carries .train()/.eval() and parameters()

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...  # (K, B, D) -> (K, B, P)
    def clip_grad(self, max_norm: float) -> None: ...
    def member_params(self) -> list[list[torch.Tensor]]: ...  # one optimizer param group per member
    def member_grads(self, active: list[bool]) -> None: ...  # hand active members' gradients to their groups
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def member_states(self, state: dict) -> list[dict]: ...


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class SingleLearner:
    """One model; on several ranks its training forward goes through DistributedDataParallel."""

    k = 1

    def __init__(self, model: torch.nn.Module, ranks: Ranks = SINGLE):
        self.module = model
        self.ddp = None
        if ranks.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [model_device(model)] if model_device(model).type == "cuda" else None
            # buffers (InputNorm statistics) are equal on all ranks: no per-forward broadcast
            # (the option's name changed in torch 2.13; older torch only knows broadcast_buffers)
            known = inspect.signature(DistributedDataParallel).parameters
            no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers": False}
            self.ddp = DistributedDataParallel(model, device_ids=ids, **no_sync)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # eval passes bypass DDP: ranks evaluate uneven shares, and no gradient needs reducing
        forward = self.ddp if self.ddp is not None and self.module.training else self.module
        return forward(x[0])[None]

    def clip_grad(self, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)

    def member_params(self) -> list[list[torch.Tensor]]:
        return [list(self.module.parameters())]

    def member_grads(self, active: list[bool]) -> None:
        """The one member's gradients are already on its parameters."""

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)

    def member_states(self, state: dict) -> list[dict]:
        return [state]


# ---------------------------------------------------------------- schedule ------------------
class LRSchedule:
    """newbob (per epoch, on dev frame accuracy) or cosine (per step); state is checkpointed."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        if cfg.schedule not in ("newbob", "cosine"):
            raise AsrKdError(f"schedule: unknown {cfg.schedule!r}; known: newbob, cosine")
        self.cfg, self.steps_per_epoch = cfg, steps_per_epoch
        self.state = {"lr": cfg.lr, "step": 0, "halvings": 0, "best_acc": -1.0}

    def lr_for_step(self) -> float:
        cfg, step = self.cfg, self.state["step"]
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.schedule == "newbob":
            return self.state["lr"] * warm
        total = max(1, cfg.max_epochs * self.steps_per_epoch)
        cos = 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return cfg.lr * warm * (cfg.cosine_final_fraction + (1 - cfg.cosine_final_fraction) * cos)

    def step(self, optimizer: torch.optim.Optimizer) -> float:
        lr = self.lr_for_step()
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.state["step"] += 1
        return lr

    def end_epoch(self, epoch: int, dev_acc: float) -> bool:
        """Update after an epoch; True when training should stop."""
        cfg, st = self.cfg, self.state
        if cfg.schedule == "cosine":
            return epoch >= cfg.max_epochs
        improvement = dev_acc - st["best_acc"]
        st["best_acc"] = max(st["best_acc"], dev_acc)
        if improvement < cfg.newbob_threshold and epoch >= cfg.min_epochs:
            st["halvings"] += 1
            st["lr"] *= 0.5
            log.info("epoch %d: dev accuracy gain %.4f < %.4f, lr halved to %.3g (%d/%d)", epoch, improvement,
                     cfg.newbob_threshold, st["lr"], st["halvings"], cfg.newbob_max_halvings)
        return epoch >= cfg.max_epochs or st["halvings"] > cfg.newbob_max_halvings


class MemberSchedules:
    """One LRSchedule per member: stacked members halve their LR and stop on their own dev accuracy,
    exactly as if each were trained alone; member k's LR goes to optimizer param group k."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, k: int):
        self.members = [LRSchedule(cfg, steps_per_epoch) for _ in range(k)]

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        for schedule, group in zip(self.members, optimizer.param_groups):
            group["lr"] = schedule.lr_for_step()
            schedule.state["step"] += 1

    @property
    def state(self) -> dict | list[dict]:
        """A single model's state is one dict, as in checkpoints written before members had their own."""
        states = [s.state for s in self.members]
        return states[0] if len(states) == 1 else states

    @state.setter
    def state(self, value: dict | list[dict]) -> None:
        values = [value] * len(self.members) if isinstance(value, dict) else value
        if len(values) != len(self.members):
            raise AsrKdError(f"checkpoint holds {len(values)} member schedules, this run has {len(self.members)}")
        for schedule, v in zip(self.members, values):
            schedule.state = dict(v)


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise AsrKdError(f"optimizer: unknown {cfg.optimizer!r}; known: sgd, adamw")


# ---------------------------------------------------------------- the loop ------------------
@dataclass
class LoopState:
    epoch: int = 0
    best_epoch: int = 0
    best_acc: float = -1.0
    best_member_acc: list[float] = field(default_factory=list)
    stopped: bool = False
    member_best_epoch: list[int] = field(default_factory=list)  # each member's own best dev epoch
    member_stopped: list[bool] = field(default_factory=list)  # a stopped member's weights no longer change

    def members(self, k: int) -> None:
        """Per-member fields for K members (a checkpoint from before they existed: the shared values)."""
        if len(self.member_best_epoch) != k:
            self.member_best_epoch = [self.best_epoch] * k
            self.member_stopped = [self.stopped] * k
            self.best_member_acc = list(self.best_member_acc) or [-1.0] * k

    def end_epoch(self, epoch: int, schedules: MemberSchedules, accs: list[float]) -> None:
        """Each member still training: its schedule's stop decision and its own best epoch."""
        for m, (schedule, acc) in enumerate(zip(schedules.members, accs)):
            if self.member_stopped[m]:
                continue
            self.member_stopped[m] = schedule.end_epoch(epoch, acc)
            if acc > self.best_member_acc[m]:
                self.member_best_epoch[m], self.best_member_acc[m] = epoch, acc
        self.stopped = all(self.member_stopped)
        self.best_epoch = self.member_best_epoch[0]
        self.best_acc = sum(self.best_member_acc) / len(self.best_member_acc)


@dataclass
class Epochs:
    """What the loop trains on: the frames and member seeds, and how epochs order them."""

    train: Frames
    seeds: list[int]
    labelled_only: bool  # hard-label training visits labelled frames only; a loss hook sees all
    gens: list[torch.Generator]  # resident layout: each member's checkpointed shuffling generator
    frames: torch.Tensor | None  # resident layout: the frames each epoch permutes

    @classmethod
    def make(cls, train: Frames, seeds: list[int], labelled_only: bool) -> "Epochs":
        frames = None
        if not train.streamed:
            frames = train.labelled_frames() if labelled_only else torch.arange(train.num_frames, device=train.device)
        return cls(train, seeds, labelled_only, [make_generator(s, train.device) for s in seeds], frames)

    @property
    def num_frames(self) -> int:
        if self.frames is not None:
            return len(self.frames)
        return self.train.num_labelled_frames() if self.labelled_only else self.train.num_frames

    def orders(self, epoch: int, batch_size: int) -> tuple[int, Iterator[torch.Tensor]]:
        """(number of steps, iterator of (K, N) member frame orders, one per resident chunk)."""
        if self.frames is not None:
            return math.ceil(len(self.frames) / batch_size), iter([torch.stack([shuffled(self.frames, g)
                                                                                  for g in self.gens])])
        plan = self.train.epoch_plan(self.seeds[0], epoch, self.labelled_only)
        steps = sum(math.ceil(n / batch_size) for n in self.train.chunk_frame_counts(plan))
        return steps, self._streamed_orders(plan, epoch)

    def _streamed_orders(self, plan, epoch: int):
        device = self.train.device
        for c, chunk in enumerate(self.train.resident(plan)):
            yield torch.stack([shuffled(chunk.frames, make_generator(chunk_seed(s, epoch, c), device))
                               for s in self.seeds])


def run_training(learner: Learner, cfg: TrainConfig, train: Frames, dev: Frames, exp: ExpDir,
                 spec: ModelSpec, seeds: list[int], loss_fn: LossFn | None = None,
                 ranks: Ranks = SINGLE) -> TrainResult:
    """Epochs of shuffled minibatches, dev evaluation, LR schedule and checkpoints, with resume."""
    if loss_fn is not None and learner.k != 1 and not stacked_loss(loss_fn):
        raise AsrKdError("a custom loss_fn needs a single model (K = 1), or must be a stacked loss")
    epochs = Epochs.make(train, seeds, labelled_only=loss_fn is None)
    if epochs.num_frames == 0:
        raise AsrKdError(f"{train.name}: no labelled frames to train on")
    if dev.num_labelled_frames() == 0:
        raise AsrKdError(f"{dev.name}: the dev set has no labels (needed for the LR schedule)")
    steps = epoch_steps(cfg, math.ceil(epochs.num_frames / cfg.batch_size))
    optimizer = make_optimizer(cfg, [{"params": ps} for ps in learner.member_params()])
    schedule = MemberSchedules(cfg, steps, learner.k)
    state = LoopState()
    state.members(learner.k)
    torch.manual_seed(seeds[0])  # dropout masks; a resumed run restores the RNG state instead
    with _log_into(exp, ranks):
        resume(exp, cfg, learner, optimizer, schedule, epochs, state)
        if ranks.main:
            _truncate_metrics(exp.path / "metrics.jsonl", state.epoch)  # drop epochs past the checkpoint
            if state.epoch == 0:
                ExpDir.create(exp.path, cfg, log_name="train")
        _epochs(learner, cfg, dev, exp, epochs, optimizer, schedule, state, loss_fn, ranks)
    return TrainResult(exp.path, state.best_epoch, state.best_member_acc, state.epoch, state.member_best_epoch)


@contextlib.contextmanager
def _log_into(exp: ExpDir, ranks: Ranks):
    """Mirror logging into exp/log/train.log for this run only (no handler leaks between runs)."""
    logger = logging.getLogger("asr_kd")
    before = list(logger.handlers)
    if ranks.main and any((exp.path / "checkpoints").glob("epoch_*.pt")):
        exp.add_log_file("train")
    try:
        yield
    finally:
        for handler in logger.handlers[:]:
            if handler not in before:
                logger.removeHandler(handler)
                handler.close()


def _epochs(learner, cfg, dev, exp, epochs: Epochs, optimizer, schedule, state, loss_fn, ranks: Ranks) -> None:
    autocast = cfg.bf16 and epochs.train.device.type == "cuda"
    while not state.stopped:
        epoch = state.epoch + 1
        t0 = time.time()
        active = [not s for s in state.member_stopped]
        train_stats, trained = run_epoch(learner, cfg, epochs, optimizer, schedule, loss_fn, epoch, autocast, ranks,
                                         active)
        check_not_diverged(train_stats, dev.num_pdfs or epochs.train.num_pdfs, epoch, cfg.lr)
        seconds = time.time() - t0
        dev_stats = member_metrics(learner, dev, cfg, autocast, ranks)
        lrs = [group["lr"] for group in optimizer.param_groups]  # before end_epoch halves them
        state.end_epoch(epoch, schedule, dev_stats["frame_acc"])
        state.epoch = epoch
        record = {"epoch": epoch, "lr": _one_or_all(lrs), **train_stats,
                  "dev_ce": _one_or_all(dev_stats["ce"]), "dev_frame_acc": _one_or_all(dev_stats["frame_acc"]),
                  "frames_per_s": round(trained * learner.k / seconds, 1), "epoch_s": round(seconds, 2)}
        if ranks.main:
            exp.log_metrics(record)
            log.info("epoch %d: %s", epoch, {k: v for k, v in record.items() if k != "epoch"})
            save_checkpoint(exp, cfg, learner, optimizer, schedule, epochs, state)
        ranks.barrier()


DIVERGED_FACTOR = 10.0  # x ln(num_pdfs): the CE of guessing uniformly over the pdfs


def check_not_diverged(train_stats: dict, num_pdfs: int | None, epoch: int, lr: float) -> None:
    """Stop a run whose loss exploded without reaching inf (lr 1e4 trains to CE 8e11 and "finishes").

    Rule: an epoch's mean train CE (hard-label CE of any member) above 10 x ln(num_pdfs), i.e. ten
    times worse than a model that guesses every pdf equally, which a run that learns anything never
    reaches (it starts near 1 x ln(num_pdfs) and goes down). Checked per epoch, so the bad epoch
    never becomes a checkpoint."""
    if not num_pdfs or num_pdfs < 2:
        return
    bound = DIVERGED_FACTOR * math.log(num_pdfs)
    for name in ("train_ce", "train_loss_hard_ce"):
        values = train_stats.get(name)
        if values is None:
            continue
        worst = max(values) if isinstance(values, list) else values
        if not worst <= bound:
            raise AsrKdError(f"training diverged at epoch {epoch}: {name} {worst:.4g} > {bound:.3g} "
                             f"(10 x ln({num_pdfs} pdfs): ten times the CE of guessing uniformly); lower the learning "
                             f"rate (lr is {lr:g}: e.g. --set lr={lr / 10:g}, or student.lr for distill) and keep "
                             f"grad_clip > 0")


def _one_or_all(values: list[float]) -> float | list[float]:
    return values[0] if len(values) == 1 else values


def epoch_steps(cfg: TrainConfig, full_steps: int) -> int:
    """Steps of one epoch: all of them, or at most cfg.max_steps_per_epoch (as icefall and Kaldi nnet3 cut
    an "epoch" of a very large corpus into a fixed number of steps); the LR schedule counts these."""
    if cfg.max_steps_per_epoch < 0:
        raise AsrKdError(f"max_steps_per_epoch must be >= 0 (0 = whole epochs), got {cfg.max_steps_per_epoch}")
    return min(full_steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else full_steps


def run_epoch(learner: Learner, cfg: TrainConfig, epochs: Epochs, optimizer, schedule: MemberSchedules,
              loss_fn: LossFn | None, epoch: int, autocast: bool, ranks: Ranks = SINGLE,
              active: list[bool] | None = None) -> tuple[dict, int]:
    """One pass over the epoch's frames (the first cfg.max_steps_per_epoch batches when capped), each
    member in its own random order; returns (mean train metrics, frames trained per member).
    Only `active` members (default: all) are updated: a member that has stopped keeps its weights."""
    active = active or [True] * learner.k
    learner.module.train()
    train = epochs.train
    sums: dict[str, torch.Tensor] = {}
    first_bad = torch.tensor(-1, device=train.device)
    check_every = 1 if train.device.type == "cpu" else 50
    full_steps, orders_per_chunk = epochs.orders(epoch, cfg.batch_size)
    steps = epoch_steps(cfg, full_steps)
    progress = tqdm(total=steps, desc=f"epoch {epoch}", leave=False, disable=None if ranks.main else True,
                    mininterval=5)
    step = trained = 0
    for orders in orders_per_chunk:  # (K, N) frame ids of the resident chunk (all frames when resident)
        for start in range(0, orders.shape[1], cfg.batch_size):
            if step == steps:
                break
            step += 1
            progress.update()
            full = orders[:, start:start + cfg.batch_size]
            if full.shape[1] < ranks.world:
                continue  # too few frames to give every rank one (data-parallel only)
            trained += full.shape[1]
            idx = ranks.share(full)
            batch = member_batch(train, idx, cfg)
            schedule.step(optimizer)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits = learner.logits(batch.x).float()
            if loss_fn is None:
                loss, metrics = hard_ce(logits, batch.y)
            elif stacked_loss(loss_fn):  # one loss over all members' logits (mutual learning)
                loss, metrics = loss_fn(logits, batch)
            else:
                loss, metrics = loss_fn(logits[0], _squeeze(batch))
            if ranks.world > 1:  # DDP averages over ranks: weight each rank's mean by its share
                loss = loss * (idx.shape[1] * ranks.world / full.shape[1])
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step - 1, first_bad)
            if (step - 1) % check_every == 0 or step == steps:
                _check_finite(first_bad, epoch, steps)
            optimizer.zero_grad(set_to_none=True)
            learner.module.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                learner.clip_grad(cfg.grad_clip)
            learner.member_grads(active)
            optimizer.step()
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + torch.as_tensor(value, device=train.device).detach().float()
        if step == steps:
            break
    if hasattr(orders_per_chunk, "close"):
        orders_per_chunk.close()  # a capped epoch: release the streamed chunks (and the loader thread) now
    progress.close()
    _check_finite(first_bad, epoch, steps)
    return {f"train_{k}": _round(ranks.sum(v) / (steps * ranks.world)) for k, v in sums.items()}, trained


def _round(v: torch.Tensor) -> float | list[float]:
    values = [round(float(x), 5) for x in v.flatten()]
    return values[0] if len(values) == 1 else values


def _check_finite(first_bad: torch.Tensor, epoch: int, steps: int) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise AsrKdError(f"loss is NaN/inf at epoch {epoch}, step {bad + 1} of {steps}; "
                         f"lower the learning rate or check the features/targets")


def member_batch(data: Frames, idx: torch.Tensor, cfg: TrainConfig) -> FrameBatch:
    """Windows for a (K, B) block of frame ids -> FrameBatch with x (K, B, D) and y (K, B)."""
    k, b = idx.shape
    flat = idx.reshape(-1)
    utt = data.utt_of(flat)
    x = data.windows(flat, cfg.left_context, cfg.right_context, utt).reshape(k, b, -1)
    return FrameBatch(x, data.labels_of(flat, utt).reshape(k, b), idx, utt.reshape(k, b))


def _squeeze(batch: FrameBatch) -> FrameBatch:
    return FrameBatch(batch.x[0], batch.y[0], batch.frame_index[0], batch.utt_index[0])


def hard_ce(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Sum over members of each member's mean CE over its labelled frames (members stay independent)."""
    k, b, p = logits.shape
    ce = F.cross_entropy(logits.reshape(k * b, p), y.reshape(-1), ignore_index=-1, reduction="none").view(k, b)
    labelled = (y >= 0)
    count = labelled.sum(1).clamp(min=1)
    per_member = ce.sum(1) / count
    correct = ((logits.argmax(-1) == y) & labelled).sum(1) / count
    return per_member.sum(), {"ce": per_member.detach(), "frame_acc": correct.detach()}


@torch.no_grad()
def member_metrics(learner: Learner, data: Frames, cfg: TrainConfig, autocast: bool, ranks: Ranks = SINGLE) -> dict:
    """Per-member CE and frame accuracy over `data`'s labelled frames (each rank sums its share)."""
    learner.module.eval()
    sums = torch.zeros(3, learner.k, device=data.device, dtype=torch.float64)  # ce, correct, frames
    for frames in labelled_ranges(data):
        frames = ranks.share(frames)
        for start in range(0, len(frames), cfg.eval_batch_size):
            idx = frames[start:start + cfg.eval_batch_size]
            x = data.windows(idx, cfg.left_context, cfg.right_context)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits = learner.logits(x.expand(learner.k, *x.shape)).float()
            y = data.labels_of(idx).expand(learner.k, len(idx))
            sums[0] += F.cross_entropy(logits.transpose(1, 2), y, reduction="none").sum(1).double()
            sums[1] += (logits.argmax(-1) == y).sum(1).double()
            sums[2] += len(idx)
    ce_sum, correct, n = ranks.sum(sums).cpu()
    n = n.clamp_min(1)
    return {"ce": [round(float(v), 5) for v in ce_sum / n], "frame_acc": [round(float(v), 5) for v in correct / n]}


# ---------------------------------------------------------------- checkpoints ---------------
def checkpoint_dir(exp: ExpDir) -> Path:
    return exp.path / "checkpoints"


def save_checkpoint(exp: ExpDir, cfg: TrainConfig, learner: Learner, optimizer, schedule: MemberSchedules,
                    epochs: Epochs, state: LoopState) -> None:
    """Atomically write checkpoints/epoch_N.pt, then prune old ones (keeping the best epoch's)."""
    blob = {
        "epoch": state.epoch, "config": to_dict(cfg), "loop": dataclasses.asdict(state),
        "model": learner.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state,
        "layout": epochs.train.layout(),
        "generators": [g.get_state() for g in epochs.gens], "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    ckpt_dir = checkpoint_dir(exp)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    save_torch(blob, ckpt_dir / f"epoch_{state.epoch}.pt")
    keep = set(state.member_best_epoch) | set(range(state.epoch - cfg.keep_checkpoints + 1, state.epoch + 1))
    for old in ckpt_dir.glob("epoch_*.pt"):
        if _epoch_of(old) not in keep:
            old.unlink()


def _epoch_of(path: Path) -> int:
    return int(path.stem.split("_")[1])


def last_checkpoint(exp: ExpDir) -> Path | None:
    files = sorted(checkpoint_dir(exp).glob("epoch_*.pt"), key=_epoch_of)
    return files[-1] if files else None


def resume(exp: ExpDir, cfg: TrainConfig, learner: Learner, optimizer, schedule: MemberSchedules,
           epochs: Epochs, state: LoopState) -> None:
    """Restore model, optimizer, schedule, RNG and generator states from the last checkpoint, if any."""
    path = last_checkpoint(exp)
    if path is None:
        return
    blob = load_torch(path, "checkpoint", map_location="cpu", weights_only=False)  # RNG states stay on the CPU
    old, new = blob.get("config"), to_dict(cfg)
    if old != new:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise AsrKdError(f"{exp.path}: holds checkpoints of a run with a different config (changed: {changed}); "
                         f"use a new exp dir or delete {checkpoint_dir(exp)}")
    layout = blob.get("layout", "resident")
    if layout != epochs.train.layout():
        raise AsrKdError(f"{exp.path}: its checkpoints trained {epochs.train.name} with layout {layout}, this run "
                         f"would use {epochs.train.layout()} (another data.max_resident_frames or free memory); set "
                         f"data.max_resident_frames to the old budget, or use a new exp dir")
    try:
        learner.load_state_dict(blob["model"])
    except RuntimeError as e:
        raise AsrKdError(f"{path}: checkpoint weights do not fit this model ({str(e).strip().splitlines()[-1].strip()}); "
                         f"it holds another number of pdfs or architecture: use a new exp dir or delete "
                         f"{checkpoint_dir(exp)}") from None
    if len(blob["optimizer"]["param_groups"]) != len(optimizer.param_groups):
        raise AsrKdError(f"{exp.path}: its checkpoints come from a stacked run whose members shared one optimizer "
                         f"group (before members had their own LR); use a new exp dir or delete "
                         f"{checkpoint_dir(exp)}")
    optimizer.load_state_dict(blob["optimizer"])
    schedule.state = blob["schedule"]
    for gen, gen_state in zip(epochs.gens, blob["generators"]):
        gen.set_state(gen_state)
    torch.set_rng_state(blob["torch_rng"])
    if blob["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    for key, value in blob["loop"].items():
        setattr(state, key, value)
    state.members(learner.k)
    log.info("%s: resumed after epoch %d", exp.path, state.epoch)


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln).get("epoch", 0) <= last_epoch]
    write_text(path, "".join(ln + "\n" for ln in kept))


def best_member_states(result: TrainResult, learner: Learner) -> list[dict]:
    """Each member's weights at its own best dev epoch, read from that epoch's checkpoint."""
    epochs = result.best_epochs or [result.best_epoch] * learner.k
    states = {}
    for e in sorted(set(epochs)):
        blob = load_torch(checkpoint_dir(ExpDir(result.exp_dir)) / f"epoch_{e}.pt", "checkpoint",
                          map_location="cpu", weights_only=False)
        states[e] = learner.member_states(blob["model"])
    return [states[e][m] for m, e in enumerate(epochs)]


def read_metrics(exp_dir: str | Path) -> list[dict]:
    path = Path(exp_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]



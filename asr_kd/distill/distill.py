"""Distil a teacher (one model or an ensemble) into a student frame classifier.

    teacher = OnlineTeacher.load(["exp/ens"], "arith")                # or CachedTeacher("exp/ens_cache_T2")
    transfer = FrameData.load("data/fbank/train", "exp/tri1_ali")     # or no alignment: unlabelled
    result = distill(TrainConfig(), teacher, transfer, LossConfig(), dev=dev, exp_dir="exp/student")

The student trains with the nnet stage's trainer (`train_frame_classifier`) and this stage's loss
(losses.py) through the trainer's loss hook; dev frame accuracy against hard labels drives its LR
schedule and picks the best epoch, as for any model. The transfer set may be the training set, a
subset of it (`transfer_subset`), or features without alignments (labels -1): the hard term then
sees no labelled frame and contributes nothing. `distill.json` in the exp dir records the teacher,
loss and transfer set; resuming with different ones is refused.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr_kd.config import to_dict
from asr_kd.distill.cache import CachedTeacher, check_cache_meta
from asr_kd.distill.hidden_targets import HiddenConfig, HiddenSource
from asr_kd.distill.losses import LossConfig, Targets, distill_loss
from asr_kd.distill.teachers import OnlineTeacher
from asr_kd.errors import AsrKdError
from asr_kd.io import read_json, write_json
from asr_kd.nnet.devices import SINGLE, Ranks, resolve_device, training_device
from asr_kd.nnet.frames import FrameBatch, FrameData
from asr_kd.nnet.quant import fake_quantize_linears
from asr_kd.nnet.stream import StreamedFrames
from asr_kd.nnet.train import Frames, ModelSpec, TrainConfig, TrainResult, load_model, train_frame_classifier
from asr_kd.steps.tree import TREE_KEY, check_same_tree

log = logging.getLogger(__name__)

Teacher = OnlineTeacher | CachedTeacher


@dataclass
class TeacherConfig:
    models: list[str] = field(default_factory=list)  # model dirs, final.pt files or an ensemble dir
    combination: str = "arith"  # arith | geo
    cache: str = ""  # a teacher cache dir (cache-teacher): used instead of running `models`


@dataclass
class DistillConfig:
    """Everything a distillation run needs besides data: the student's training config, the loss, the teacher."""

    student: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    hidden: HiddenConfig = field(default_factory=HiddenConfig)  # hidden-layer terms, DistilBERT init
    fake_int8: bool = False  # quantisation-aware: the student trains through int8 fake quantisation (nnet/quant.py)


@dataclass
class DistillResult:
    model: torch.nn.Module
    spec: ModelSpec
    train: TrainResult
    exp_dir: Path


def make_loss_fn(teacher: Teacher | None, loss_cfg: LossConfig, hidden: HiddenSource | None = None):
    """The trainer's `loss_fn(logits, batch)`: teacher targets for the batch's frames, then the weighted terms."""
    if teacher is None and loss_cfg.needs_teacher:
        raise AsrKdError(f"loss terms {sorted(loss_cfg.terms)} need a teacher, but none was given")
    if hidden is None and loss_cfg.needs_hidden:
        raise AsrKdError(f"loss terms {sorted(loss_cfg.terms)} match hidden layers: set hidden.teacher")

    def loss_fn(logits: torch.Tensor, batch: FrameBatch):
        if loss_cfg.needs_teacher:
            targets = teacher.targets(batch, loss_cfg.temperature)
        else:
            targets = Targets(labels=batch.y)
        if loss_cfg.needs_hidden:
            targets.hidden = hidden.hidden(batch)
        loss, metrics = distill_loss(logits, targets, loss_cfg)
        labelled = batch.y >= 0
        metrics["frame_acc"] = ((logits.argmax(-1) == batch.y) & labelled).sum() / labelled.sum().clamp_min(1)
        metrics["labelled_fraction"] = labelled.float().mean()
        return loss, metrics

    return loss_fn


def load_teacher(cfg: TeacherConfig, temperature: float, *, feature_config_hash: str | None = None,
                 feature_store: str | None = None, device: str | torch.device = "cpu") -> Teacher:
    """The configured teacher: a checked cache if `cfg.cache`, else the models run online."""
    if cfg.cache:
        spec = None
        if cfg.models:  # when the models are named too, the cache must have been made from exactly them
            spec = OnlineTeacher.load(cfg.models, cfg.combination).spec
        cached = CachedTeacher(cfg.cache, temperature=temperature, spec=spec,
                               feature_config_hash=feature_config_hash, feature_store=feature_store, device=device)
        if cached.combination != cfg.combination:
            log.warning("%s: the cache combines members %r; teacher.combination %r does not apply to it",
                        cfg.cache, cached.combination, cfg.combination)
        return cached
    if not cfg.models:
        raise AsrKdError("teacher: give teacher.models (model or ensemble dirs) or teacher.cache")
    return OnlineTeacher.load(cfg.models, cfg.combination, device)


def distill(student_cfg: TrainConfig, teacher: Teacher | None, transfer_set: Frames, loss_cfg: LossConfig, *,
            dev: Frames, exp_dir: str | os.PathLike, data_parallel: bool = False,
            hidden: HiddenConfig | None = None, fake_int8: bool = False) -> DistillResult:
    """Train a student on `transfer_set` with `loss_cfg` against `teacher`; returns the best-dev-epoch model.

    `data_parallel`: under torchrun, one student on all ranks (train.py); each rank's teacher
    answers for that rank's share of each batch. `hidden`: the hidden-layer teacher and layers of
    the hint / hidden_cos / sp terms and DistilBERT's init (hidden_targets.py). `fake_int8`: the
    student trains through int8 fake quantisation (quantisation-aware distillation).
    """
    exp_dir = Path(exp_dir)
    ranks = Ranks.from_env() if data_parallel else SINGLE
    device = training_device(student_cfg.device) if data_parallel else resolve_device(student_cfg.device)
    transfer, dev = transfer_set.to(device), dev.to(device)
    num_pdfs = transfer.num_pdfs or dev.num_pdfs
    if teacher is not None:
        if isinstance(teacher, CachedTeacher):
            check_cache_meta(teacher.meta, teacher.path / "meta.json", temperature=loss_cfg.temperature)
        check_same_tree([(f"teacher {teacher_origin(teacher)}", teacher_tree(teacher))] +
                        [(f"alignment of {s.name}", s.tree_sha256) for s in (transfer, dev) if s.num_pdfs is not None])
        if num_pdfs is not None and teacher.num_pdfs != num_pdfs:
            origin = teacher.path if isinstance(teacher, CachedTeacher) else [str(s) for s in teacher.ensemble.sources]
            raise AsrKdError(f"{transfer.name}: labels have {num_pdfs} pdfs but the teacher {origin} predicts "
                             f"{teacher.num_pdfs}: made with another tree?")
        num_pdfs = teacher.num_pdfs
        teacher.to(device).attach(transfer)
    elif transfer.num_labelled_frames() == 0:
        raise AsrKdError(f"{transfer.name}: no labels and no teacher: nothing to learn from")
    source = None
    if hidden is not None and hidden.used:
        source = HiddenSource(hidden, loss_cfg, device).attach(transfer)
    elif loss_cfg.needs_hidden:
        raise AsrKdError(f"loss terms {sorted(loss_cfg.terms)} match hidden layers: set hidden.teacher")
    extra = {**({"hidden": to_dict(hidden)} if source else {}), **({"fake_int8": True} if fake_int8 else {})}
    record_run(exp_dir, teacher, transfer, loss_cfg, write=ranks.main, extra=extra)
    input_dim = (student_cfg.left_context + 1 + student_cfg.right_context) * transfer.dim
    prepare = student_preparation(source, fake_int8, student_cfg.seed, input_dim)
    result = train_frame_classifier(student_cfg, transfer, dev, loss_fn=make_loss_fn(teacher, loss_cfg, source),
                                    exp_dir=exp_dir, num_pdfs=num_pdfs, data_parallel=data_parallel,
                                    prepare=prepare)
    model, spec = load_model(exp_dir, device)
    return DistillResult(model, spec, result, exp_dir)


def student_preparation(source: HiddenSource | None, fake_int8: bool, seed: int, input_dim: int):
    """The trainer's `prepare(model)`: teacher init / hooks / hint projection, then fake quantisation."""
    if source is None and not fake_int8:
        return None

    def prepare(model: torch.nn.Module) -> torch.nn.Module | None:
        aux = source.prepare(model, seed, input_dim) if source is not None else None
        if fake_int8:
            fake_quantize_linears(model)
        return aux

    return prepare


def record_run(exp_dir: Path, teacher: Teacher | None, transfer: Frames, loss_cfg: LossConfig,
               write: bool = True, extra: dict | None = None) -> None:
    """Write distill.json (when `write`: rank 0); refuse to resume an exp dir that was distilling something else.
    `extra`: what else defines the run (hidden-layer teacher, fake quantisation), recorded only when used."""
    labelled = transfer.num_labelled_frames()
    record = {"loss": to_dict(loss_cfg), "teacher": describe_teacher(teacher),
              "transfer_set": {"name": str(transfer.name), "num_utts": len(transfer.utt_ids),
                               "num_frames": transfer.num_frames, "labelled_frames": labelled}, **(extra or {})}
    path = exp_dir / "distill.json"
    if path.is_file() and read_json(path) != record:
        old = read_json(path)
        changed = sorted(k for k in record if old.get(k) != record[k])
        raise AsrKdError(f"{path}: this exp dir was distilling with a different {', '.join(changed)}; "
                         "use a new exp dir or delete the old one")
    if not write:
        return
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    log.info("distill into %s: loss %s; teacher %s; transfer set %s (%d of %d frames labelled)", exp_dir,
             record["loss"], record["teacher"], transfer.name, labelled, transfer.num_frames)


def describe_teacher(teacher: Teacher | None) -> dict | None:
    if teacher is None:
        return None
    if isinstance(teacher, CachedTeacher):
        keys = ("target", "combination", "temperature", "teacher_sha256", "top_k", "feature_config_hash")
        return {"cache": str(teacher.path), **{k: teacher.meta[k] for k in keys}}
    return {"online": [str(s) for s in teacher.ensemble.sources], "combination": teacher.combination,
            "teacher_sha256": list(teacher.spec.sha256) if teacher.spec else None}


# --------------------------------------------------------------------------- transfer sets


def transfer_subset(data: Frames, fraction: float, seed: int = 0) -> Frames:
    """A random `fraction` of `data`'s utterances (at least one), in their original order.

    Whole utterances, not scattered frames: the subset is then also valid for cached lookups and
    for sequence-level use. Labels, pdf count and priors are kept.
    """
    if not 0 < fraction <= 1:
        raise AsrKdError(f"subset fraction must be in (0, 1], got {fraction}")
    n = len(data.utt_ids)
    count = max(1, round(fraction * n))
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
    name = f"{data.name}[{count}/{n} utts, seed {seed}]"
    if isinstance(data, StreamedFrames):
        return data.select(chosen, name)
    offsets = data.offsets.cpu().numpy()
    rows = np.concatenate([np.arange(offsets[u], offsets[u + 1]) for u in chosen])
    lengths = offsets[chosen + 1] - offsets[chosen]
    rows_t = torch.from_numpy(rows).to(data.device)
    subset = FrameData(data.feats[rows_t], torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)])),
                       [data.utt_ids[u] for u in chosen], data.labels[rows_t], data.num_pdfs, data.priors, name=name)
    subset.tree_sha256 = data.tree_sha256
    return subset


def teacher_tree(teacher) -> str | None:
    """The tree of a teacher's pdf ids: its members' (online) or the one its cache recorded."""
    return teacher.meta.get(TREE_KEY) if isinstance(teacher, CachedTeacher) else teacher.ensemble.tree_sha256


def teacher_origin(teacher) -> str:
    return str(teacher.path) if isinstance(teacher, CachedTeacher) else teacher.ensemble.describe()


def drop_labels(data: Frames) -> Frames:
    """The same frames with every label -1: transfer data as if no alignment existed."""
    if isinstance(data, StreamedFrames):
        return data.without_labels(f"{data.name}[unlabelled]")
    return FrameData(data.feats, data.offsets, data.utt_ids, None, data.num_pdfs, data.priors,
                     name=f"{data.name}[unlabelled]")

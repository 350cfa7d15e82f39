"""Deep mutual learning (Zhang et al. 2018): K peers trained together, no pre-trained teacher.

Each peer k minimises its hard CE plus a KL term towards the average of the OTHER peers'
predictions (held fixed for that step, as in the paper's alternating updates):

    L = sum_k [ w_hard * hard_ce(z_k, y) + w_soft * soft_kl(z_k, p_{-k}) ],  p_{-k} = mean_{l != k} softmax(z_l / T)

with the terms of losses.py (`soft_kl` at T; the paper uses T = 1). The peers are the stacked
ensemble trainer's members (nnet/ensemble.py: one vmap-ed forward/backward for all K) driven by
the shared loop through its stacked-loss hook; unlike an ensemble's members they read the SAME
frames in the same order (one shuffling seed), since each peer's KL target is the others'
prediction on its frames. Peer k's initial weights come from seed + k. With K = 1 there is no
other peer: the loss is the hard CE alone and training equals plain hard-label training.

Layout: `<exp>/group/` (shared checkpoints, metrics.jsonl with one value per peer),
`<exp>/peer_<k>/final.pt` (each loadable like any model), `<exp>/mutual.json`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from asr_kd.config import to_dict
from asr_kd.distill.losses import SOFT_TERMS, LossConfig, Targets, distill_loss
from asr_kd.errors import AsrKdError
from asr_kd.expdir import ExpDir
from asr_kd.io import write_json
from asr_kd.nnet.ensemble import StackedLearner, member_seeds
from asr_kd.nnet.frames import FrameBatch
from asr_kd.nnet.models import stackable
from asr_kd.nnet.train import (Frames, SingleLearner, TrainConfig, best_member_states, init_model, make_spec,
                               resolve_device, run_training, save_final)

log = logging.getLogger(__name__)


def mutual_loss_fn(loss_cfg: LossConfig, k: int):
    """The trainer's stacked loss over (K, B, P) peer logits (module docstring)."""
    hard_only = loss_cfg.without(SOFT_TERMS)

    def loss_fn(logits: torch.Tensor, batch: FrameBatch):
        probs = torch.softmax(logits.detach().float() / loss_cfg.temperature, dim=-1)
        others = (probs.sum(0, keepdim=True) - probs) / max(k - 1, 1)
        total, sums = logits.new_zeros((), dtype=torch.float32), {}
        for member in range(k):
            targets = Targets(labels=batch.y[member], probs=others[member])
            loss, metrics = distill_loss(logits[member], targets, loss_cfg if k > 1 else hard_only)
            total = total + loss
            labelled = batch.y[member] >= 0
            correct = ((logits[member].argmax(-1) == batch.y[member]) & labelled).sum()
            metrics["frame_acc"] = correct / labelled.sum().clamp_min(1)
            for name, value in metrics.items():
                sums.setdefault(name, []).append(value)
        return total, {name: torch.stack(values) for name, values in sums.items()}

    loss_fn.stacked = True
    return loss_fn


def train_mutual(cfg: TrainConfig, k: int, train: Frames, dev: Frames, exp_dir: str | Path,
                 loss_cfg: LossConfig | None = None) -> list[Path]:
    """Train K peers of `cfg.model` by mutual learning into exp_dir; returns the peer dirs."""
    loss_cfg = loss_cfg or LossConfig(terms={"hard_ce": 1.0, "soft_kl": 1.0}, temperature=1.0)
    if k < 1:
        raise AsrKdError(f"mutual learning: number of peers k must be >= 1, got {k}")
    if loss_cfg.needs_hidden or "hard_ce" not in loss_cfg.terms:
        raise AsrKdError(f"mutual learning: loss.terms {sorted(loss_cfg.terms)}: give hard_ce and a soft term "
                         "(soft_kl / soft_ce); hidden-layer terms have no teacher here")
    if k > 1 and not stackable(cfg.model):
        raise AsrKdError("mutual learning trains the peers stacked: model.norm=batch cannot be stacked")
    exp_dir = Path(exp_dir)
    device = resolve_device(cfg.device)
    train, dev = train.to(device), dev.to(device)
    spec = make_spec(cfg, train, dev, None)
    stats = train.feature_stats()
    models = [init_model(spec, s, stats).to(device) for s in member_seeds(cfg, k)]
    learner = StackedLearner(models) if k > 1 else SingleLearner(models[0])
    result = run_training(learner, cfg, train, dev, ExpDir(exp_dir / "group"), spec, [cfg.seed] * k,
                          mutual_loss_fn(loss_cfg, k))
    dirs = [exp_dir / f"peer_{i}" for i in range(k)]
    for state, out in zip(best_member_states(result, learner), dirs):
        out.mkdir(parents=True, exist_ok=True)
        save_final(out / "final.pt", state, spec)
    write_json(exp_dir / "mutual.json", {"peers": [d.name for d in dirs], "seeds": member_seeds(cfg, k),
                                         "loss": to_dict(loss_cfg), "best_epoch": result.best_epoch,
                                         "dev_frame_acc": result.dev_frame_acc})
    log.info("mutual learning, %d peers: dev frame accuracy %s at epoch %d", k, result.dev_frame_acc,
             result.best_epoch)
    return dirs

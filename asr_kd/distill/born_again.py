"""Born-again networks (Furlanello et al. 2018): G generations of one architecture in one run.

Generation 1 is distilled from the given teacher (an ensemble, a model, or a cache) exactly as
`distill` would; generation n + 1 is distilled from generation n (online, one model), with the same
student config and loss. Generation g's initial weights come from student seed + g - 1. Each
generation is an ordinary distill exp dir `<root>/gen_<g>/` (resumable like any), and
`<root>/born_again.json` lists each generation's best dev frame accuracy.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from asr_kd.distill.distill import DistillResult, Teacher, distill
from asr_kd.distill.losses import LossConfig
from asr_kd.distill.teachers import OnlineTeacher
from asr_kd.errors import AsrKdError
from asr_kd.io import write_json
from asr_kd.nnet.train import Frames, TrainConfig

log = logging.getLogger(__name__)


def generation_dir(root: str | Path, g: int) -> Path:
    return Path(root) / f"gen_{g}"


def born_again(student_cfg: TrainConfig, teacher: Teacher, transfer_set: Frames, loss_cfg: LossConfig, *,
               dev: Frames, exp_root: str | Path, generations: int, combination: str = "arith") -> list[DistillResult]:
    """Distil `generations` students in sequence (module docstring); returns each generation's result."""
    if generations < 1:
        raise AsrKdError(f"born-again: generations must be >= 1, got {generations}")
    if teacher is None:
        raise AsrKdError("born-again: generation 1 needs a teacher")
    results: list[DistillResult] = []
    for g in range(1, generations + 1):
        if g > 1:
            device = next(results[-1].model.parameters()).device
            teacher = OnlineTeacher.load([generation_dir(exp_root, g - 1)], combination, device)
        cfg = dataclasses.replace(student_cfg, seed=student_cfg.seed + g - 1)
        results.append(distill(cfg, teacher, transfer_set, loss_cfg, dev=dev, exp_dir=generation_dir(exp_root, g)))
        log.info("born-again generation %d: dev frame accuracy %.4f", g, results[-1].train.dev_frame_acc[0])
    write_json(Path(exp_root) / "born_again.json", {"generations": [
        {"generation": g, "dir": r.exp_dir.name, "best_epoch": r.train.best_epoch,
         "dev_frame_acc": r.train.dev_frame_acc[0]} for g, r in enumerate(results, 1)]})
    return results

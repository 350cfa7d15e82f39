"""Teachers: one model or an ensemble, combined `arith` or `geo`, run online in the training loop.

Combinations (asr_kd.nnet.ensemble.combine_logits), for member logits v_1..v_K at temperature T:
- ``arith``: p = mean_k softmax(v_k / T)   (Hinton et al. 2015 §4: average the members' posteriors)
- ``geo``:   p = softmax(mean_k v_k / T)    (normalised geometric mean at T; the mean logits are
             T-free, so one cache serves every temperature)
Both also give the mean member logits as `Targets.logits`: the high-T limit of either, which the
`logit_mse` term matches.

A teacher answers `targets(batch, temperature) -> Targets` for a trainer `FrameBatch`:
- `OnlineTeacher` runs its members on the batch's frames under no_grad (bf16 autocast on CUDA):
  members of one architecture and window as ONE stacked (vmap-ed) call, one call per group of
  architectures (`Ensemble.logits`), each group with its own context window built from the
  attached `FrameData` by frame index.
- `CachedTeacher` (cache.py) looks the same frames up in a teacher cache.
"""
from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch

from asr_kd.distill.losses import Targets
from asr_kd.errors import AsrKdError
from asr_kd.io import sha256_file
from asr_kd.nnet.ensemble import COMBINE, Ensemble, combine_logits
from asr_kd.nnet.frames import FrameData

log = logging.getLogger(__name__)


def check_combination(name: str) -> str:
    if name not in COMBINE:
        raise AsrKdError(f"teacher combination {name!r} unknown; known: {list(COMBINE)}")
    return name


def member_targets(member_logits: torch.Tensor, combination: str, temperature: float, labels: torch.Tensor) -> Targets:
    """Targets from (K, B, C) member logits: geo keeps the mean logits (each term tempers them),
    arith gives probabilities at T (plus the mean logits for logit_mse)."""
    member_logits = member_logits.float()
    mean_logits = member_logits.mean(0)
    if check_combination(combination) == "geo":
        return Targets(labels=labels, logits=mean_logits)
    return Targets(labels=labels, logits=mean_logits, probs=combine_logits(member_logits, temperature, "arith").exp())


@dataclass(frozen=True)
class TeacherSpec:
    """What identifies a teacher's outputs: member weight checksums (order-free) and the combination."""

    sha256: tuple[str, ...]
    combination: str

    @classmethod
    def from_files(cls, files: Sequence[str | os.PathLike], combination: str) -> "TeacherSpec":
        return cls(tuple(sorted(sha256_file(f) for f in files)), check_combination(combination))


class OnlineTeacher:
    """An `Ensemble` (K >= 1 members) evaluated inside the training loop on the batch's frames."""

    def __init__(self, ensemble: Ensemble, combination: str = "arith", spec: TeacherSpec | None = None):
        self.ensemble = ensemble
        self.combination = check_combination(combination)
        self.spec = spec
        for model, _ in ensemble.members:
            model.eval().requires_grad_(False)
        self.data: FrameData | None = None

    @classmethod
    def load(cls, dirs: Sequence[str | os.PathLike], combination: str = "arith", device="cpu") -> "OnlineTeacher":
        """Members from model dirs, final.pt files or an ensemble dir; checksums of their final.pt files."""
        ensemble = Ensemble.load(list(dirs), device)
        log.info("teacher: %d member(s) combined %r: %s", len(ensemble), combination, [str(s) for s in ensemble.sources])
        return cls(ensemble, combination, TeacherSpec.from_files(ensemble.sources, combination))

    @property
    def input_specs(self) -> list[dict]:
        return [{"feat_dim": s.feat_dim, "left_context": s.left_context, "right_context": s.right_context}
                for _, s in self.ensemble.members]

    @property
    def num_pdfs(self) -> int:
        return self.ensemble.num_pdfs

    @property
    def device(self) -> torch.device:
        return next(self.ensemble.members[0][0].parameters()).device

    def to(self, device: str | torch.device) -> "OnlineTeacher":
        self.ensemble.to(device)
        return self

    def attach(self, data: FrameData) -> "OnlineTeacher":
        """The set whose frames batches index (`batch.frame_index` are row ids of `data`)."""
        if data.dim != self.ensemble.feat_dim:
            raise AsrKdError(f"{data.name}: feature dim {data.dim}, but the teacher was trained on {self.ensemble.feat_dim}")
        self.data = data
        return self

    @torch.no_grad()
    def member_logits(self, data: FrameData, frame_index: torch.Tensor) -> torch.Tensor:
        """(K, B, C) float32 member logits; bf16 autocast on CUDA (the teacher forward dominates a step)."""
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if data.device.type == "cuda" else nullcontext()
        with autocast:
            return self.ensemble.logits(data, frame_index).float()

    def targets(self, batch, temperature: float) -> Targets:
        if self.data is None:
            raise AsrKdError("OnlineTeacher.attach(transfer_set) must be called before training")
        member = self.member_logits(self.data, batch.frame_index.to(self.data.device))
        return member_targets(member.to(batch.y.device), self.combination, temperature, batch.y)

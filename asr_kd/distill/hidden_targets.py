"""Hidden-layer targets for the feature-based terms (hint, hidden_cos, sp) and DistilBERT's init.

The teacher of these terms is ONE network (`hidden.teacher`, a model dir): FitNets, DistilBERT and
similarity-preserving KD match one teacher's layers; the soft targets may still come from an
ensemble (`teacher.models`). Per batch, the student's chosen layer is read from the trainer's own
forward through a hook (asr_kd.nnet.hidden), and the teacher runs on the same frames with its
own context window under no_grad. The hint projection (student width -> teacher width, FitNets'
regressor) is a trainable loss parameter: the trainer optimises and checkpoints it with the
student, and final.pt holds the student alone.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from asr_kd.distill.losses import Hidden, LossConfig
from asr_kd.errors import AsrKdError
from asr_kd.nnet.frames import FrameBatch, FrameData
from asr_kd.nnet.hidden import HiddenCapture, hidden_width, init_from_teacher
from asr_kd.nnet.models import load_model

log = logging.getLogger(__name__)


@dataclass
class HiddenConfig:
    """Which layers the hidden-layer terms match, and DistilBERT's initialisation.

    Layers are counted from 0 at the input side over the hidden layers (hidden.py); -1 = the last.
    """

    teacher: str = ""  # a model dir (or final.pt) whose hidden layers the terms match and init_layers copy
    student_layer: int = -1
    teacher_layer: int = -1
    init_layers: list[int] = field(default_factory=list)  # student block j <- teacher block init_layers[j]; [] = random init

    @property
    def used(self) -> bool:
        return bool(self.teacher)


class HiddenSource:
    """The hidden-layer teacher, the student's hooked layer and the hint projection, for one run."""

    def __init__(self, cfg: HiddenConfig, loss_cfg: LossConfig, device: str | torch.device = "cpu"):
        if not cfg.teacher:
            raise AsrKdError("hidden.teacher: give the model dir whose hidden layers the student should match")
        self.cfg, self.loss_cfg = cfg, loss_cfg
        self.model, self.spec = load_model(cfg.teacher, device)
        self.model.requires_grad_(False)
        self.data: FrameData | None = None
        self.student: HiddenCapture | None = None
        self.teacher: HiddenCapture | None = None
        self.projection: nn.Linear | None = None

    def attach(self, data: FrameData) -> "HiddenSource":
        """The set whose frames batches index (as OnlineTeacher.attach)."""
        self.data = data
        return self

    def prepare(self, student: nn.Module, seed: int, input_dim: int) -> nn.Module | None:
        """Initialise the fresh student (windows of `input_dim` values) from the teacher's layers (if
        asked), hook its chosen layer and return the hint projection (drawn from `seed`) when the
        `hint` term is on."""
        if self.cfg.init_layers:
            init_from_teacher(student, self.model, self.cfg.init_layers)
            log.info("student initialised from %s hidden layers %s", self.cfg.teacher, self.cfg.init_layers)
        if not self.loss_cfg.needs_hidden:
            return None
        student_dim = hidden_width(student, self.cfg.student_layer, input_dim)
        teacher_dim = hidden_width(self.model, self.cfg.teacher_layer, self.spec.input_dim)
        self.student = HiddenCapture(student, self.cfg.student_layer, "hidden.student_layer")
        self.teacher = HiddenCapture(self.model, self.cfg.teacher_layer, "hidden.teacher_layer")
        if self.loss_cfg.terms.get("hint", 0.0) == 0.0:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.projection = nn.Linear(student_dim, teacher_dim)
        return self.projection

    @torch.no_grad()
    def _teacher_layer(self, frame_index: torch.Tensor) -> torch.Tensor:
        x = self.data.windows(frame_index.to(self.data.device), self.spec.left_context, self.spec.right_context)
        self.model(x)
        return self.teacher.take()

    def hidden(self, batch: FrameBatch) -> Hidden:
        """The batch's student layer (from the training forward just run), teacher layer and projection."""
        if self.data is None or self.student is None:
            raise AsrKdError("HiddenSource: attach(transfer_set) and prepare(student) must come before training")
        s = self.student.take()
        h = self._teacher_layer(batch.frame_index).to(s.device)
        return Hidden(student=s, teacher=h, projected=self.projection(s) if self.projection is not None else None)

"""The distillation loss: a weighted sum of NAMED terms from an explicit registry.

    L = sum_name weight[name] * TERMS[name](student_logits, targets, T)

Terms (z = student logits, v = teacher logits, p = teacher probabilities at T, C = classes):

- ``soft_ce``   T^2 * mean_frames sum_c -p_c log softmax(z/T)_c   (Hinton et al. 2015 §2)
- ``soft_kl``   T^2 * mean_frames KL(p || softmax(z/T)) = soft_ce - T^2 * H(p): same gradient,
                but 0 at a perfect match, so its value is readable across T
- ``hard_ce``   mean over LABELLED frames of -log softmax(z)_y at T=1; frames with y = -1
                (unlabelled transfer data) are ignored; 0 when the batch has no labelled frame
- ``logit_mse`` mean_frames 1/(2C) * ||(z - mean z) - (v - mean v)||^2 (Ba & Caruana 2014)

Hidden-layer terms (s = a chosen student hidden layer (B, d_s), h = a chosen teacher hidden layer
(B, d_t), r(s) = s through a learned linear projection d_s -> d_t; `Targets.hidden`, hidden.py):

- ``hint``       mean over frames and features of (r(s) - h)^2 (FitNets, Romero et al. 2015: their
                 1/2 ||.||^2 summed over features differs by the constant d_t / 2, which the weight absorbs)
- ``hidden_cos`` mean_frames 1 - cos(s, h) (DistilBERT's cosine embedding loss; needs d_s = d_t)
- ``sp``         1/B^2 ||G_s - G_h||_F^2 with G = row-L2-normalised A A^T, the (B, B) batch Gram matrix
                 (similarity-preserving KD, Tung & Mori 2019, eq. 2-4): relations between the batch's
                 frames, so the two layers may differ in width

Scales, on purpose: CE/KL are SUMMED over classes and AVERAGED over frames. PyTorch's
``kl_div(reduction="mean")`` averages over classes too and so silently divides the soft term by C
(use "batchmean"). The T^2 factor keeps the soft gradient's size constant across T. As T -> inf
with zero-mean logits, T^2 * soft term -> logit_mse in value and gradient: the soft gradient is
T (softmax(z/T) - softmax(v/T)) -> (z0 - v0) / C, which is exactly d logit_mse / dz. That fixes
the 1/(2C) scale of ``logit_mse`` (tests/test_distill_losses.py checks the limit).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from asr_kd.errors import AsrKdError


def _full(x: torch.Tensor) -> torch.Tensor:
    """Compute losses in fp32 at least (student logits may come out of bf16 autocast)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


@dataclass
class Hidden:
    """A batch's chosen hidden layers: student (B, d_s), teacher (B, d_t), and the student through the
    hint projection (B, d_t) when one is trained."""

    student: torch.Tensor
    teacher: torch.Tensor
    projected: torch.Tensor | None = None


@dataclass
class Targets:
    """What a teacher gives for a batch of frames.

    `logits`: combined teacher logits (mean of member logits), re-tempered by each term;
    `probs`: teacher probabilities already at the loss temperature (arithmetic ensembles, caches of
    probabilities); `labels`: hard pdf ids, -1 = unlabelled. A term that needs what is missing
    raises AsrKdError naming it.
    """

    labels: torch.Tensor
    logits: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    hidden: Hidden | None = None  # for the hidden-layer terms

    def hidden_or_raise(self, term: str) -> Hidden:
        if self.hidden is None:
            raise AsrKdError(f"loss term {term!r} matches hidden layers: set hidden.teacher (a model dir) and "
                             "hidden.student_layer / hidden.teacher_layer")
        return self.hidden

    def probs_at(self, temperature: float) -> torch.Tensor:
        if self.probs is not None:
            return self.probs
        if self.logits is None:
            raise AsrKdError("soft-target term needs teacher logits or probabilities; the teacher gave neither")
        return torch.softmax(_full(self.logits) / temperature, dim=-1)


def soft_ce(z: torch.Tensor, tgt: Targets, temperature: float) -> torch.Tensor:
    """T^2 * cross-entropy of softmax(z/T) against the teacher's p at T; sum classes, mean frames."""
    p = _full(tgt.probs_at(temperature))
    log_q = torch.log_softmax(_full(z) / temperature, dim=-1)
    return temperature**2 * -(p * log_q).sum(-1).mean()


def soft_kl(z: torch.Tensor, tgt: Targets, temperature: float) -> torch.Tensor:
    """T^2 * KL(p || softmax(z/T)): soft_ce minus T^2 * teacher entropy (same gradient)."""
    p = _full(tgt.probs_at(temperature))
    log_q = torch.log_softmax(_full(z) / temperature, dim=-1)
    kl = torch.xlogy(p, p) - p * log_q  # xlogy: 0 log 0 = 0 (top-k targets have exact zeros)
    return temperature**2 * kl.sum(-1).mean()


def hard_ce(z: torch.Tensor, tgt: Targets, temperature: float) -> torch.Tensor:
    """CE at T=1 against labels, averaged over labelled frames only (label -1 = unlabelled)."""
    labelled = tgt.labels >= 0
    n = labelled.sum()
    total = F.cross_entropy(_full(z), tgt.labels.long().clamp_min(0), reduction="none")
    return torch.where(labelled, total, torch.zeros_like(total)).sum() / n.clamp_min(1)


def logit_mse(z: torch.Tensor, tgt: Targets, temperature: float) -> torch.Tensor:
    """1/(2C) * squared error of zero-mean logits, mean over frames: the T -> inf soft term."""
    if tgt.logits is None or not torch.isfinite(tgt.logits).all():
        raise AsrKdError("logit_mse needs full teacher logits: use an online teacher or a 'geo' cache "
                         "without top-k (arithmetic / top-k caches hold no logits)")
    z, v = _full(z), _full(tgt.logits)
    z0 = z - z.mean(-1, keepdim=True)
    v0 = v - v.mean(-1, keepdim=True)
    return ((z0 - v0) ** 2).sum(-1).mean() / (2 * z.shape[-1])


def hint(z: torch.Tensor, tgt: Targets, temperature: float) -> torch.Tensor:
    """Mean squared error between the projected student layer and the teacher layer (FitNets)."""
    hidden = tgt.hidden_or_raise("hint")
    if hidden.projected is None:
        raise AsrKdError("loss term 'hint' needs the learned projection of the student layer (none was built)")
    return F.mse_loss(_full(hidden.projected), _full(hidden.teacher))


def hidden_cos(z: torch.Tensor, tgt: Targets, temperature: float) -> torch.Tensor:
    """Mean over frames of 1 - cosine(student layer, teacher layer) (DistilBERT)."""
    hidden = tgt.hidden_or_raise("hidden_cos")
    s, h = _full(hidden.student), _full(hidden.teacher)
    if s.shape != h.shape:
        raise AsrKdError(f"loss term 'hidden_cos': student layer has {s.shape[1]} features, the teacher's "
                         f"{h.shape[1]}; choose layers of equal width (or use 'hint', which projects)")
    return (1 - F.cosine_similarity(s, h, dim=-1, eps=1e-8)).mean()


def batch_gram(a: torch.Tensor) -> torch.Tensor:
    """(B, B) Gram matrix of the batch's frames, each row L2-normalised (Tung & Mori 2019, eq. 2-3)."""
    return F.normalize(a @ a.T, p=2, dim=1)


def sp(z: torch.Tensor, tgt: Targets, temperature: float) -> torch.Tensor:
    """1/B^2 squared Frobenius distance of the student's and teacher's batch Gram matrices."""
    hidden = tgt.hidden_or_raise("sp")
    gs, gh = batch_gram(_full(hidden.student)), batch_gram(_full(hidden.teacher))
    return ((gs - gh) ** 2).sum() / gs.shape[0] ** 2


TERMS: dict[str, Callable[[torch.Tensor, Targets, float], torch.Tensor]] = {
    "soft_ce": soft_ce,
    "soft_kl": soft_kl,
    "hard_ce": hard_ce,
    "logit_mse": logit_mse,
    "hint": hint,
    "hidden_cos": hidden_cos,
    "sp": sp,
}
SOFT_TERMS = ("soft_ce", "soft_kl", "logit_mse")
HIDDEN_TERMS = ("hint", "hidden_cos", "sp")


@dataclass
class LossConfig:
    """Weights of named terms and the temperature. Paper §4: soft at T in {1,2,5,10}, hard weight 0.5."""

    terms: dict[str, float] = field(default_factory=lambda: {"soft_ce": 1.0, "hard_ce": 0.5})
    temperature: float = 2.0

    def __post_init__(self):
        unknown = sorted(set(self.terms) - set(TERMS))
        if unknown:
            raise AsrKdError(f"loss.terms: unknown term(s) {unknown}; known: {sorted(TERMS)}")
        if not self.terms:
            raise AsrKdError("loss.terms: empty; give at least one term with a weight")
        if self.temperature <= 0:
            raise AsrKdError(f"loss.temperature: must be > 0, got {self.temperature}")
        self.terms = {name: float(w) for name, w in self.terms.items()}

    @property
    def needs_teacher(self) -> bool:
        return any(self.terms.get(name, 0.0) != 0.0 for name in SOFT_TERMS)

    @property
    def needs_hidden(self) -> bool:
        return any(self.terms.get(name, 0.0) != 0.0 for name in HIDDEN_TERMS)

    def without(self, names) -> "LossConfig | None":
        """The same loss without the terms `names` (None when nothing is left)."""
        terms = {n: w for n, w in self.terms.items() if n not in names and w != 0.0}
        return LossConfig(terms, self.temperature) if terms else None


def distill_loss(z: torch.Tensor, tgt: Targets, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the configured terms; metrics hold each term's (unweighted) value, detached."""
    total = z.new_zeros((), dtype=torch.float32)
    metrics = {}
    for name, weight in cfg.terms.items():
        if weight == 0.0:
            continue
        value = TERMS[name](z, tgt, cfg.temperature)
        total = total + weight * value
        metrics[f"loss_{name}"] = value.detach()
    return total, metrics

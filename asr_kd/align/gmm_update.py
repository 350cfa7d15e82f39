"""The M-step of GMM training and Gaussian splitting in numpy, with Kaldi's semantics and a seeded RNG.

`mle_update` follows Kaldi's MleDiagGmmUpdate (mle-diag-gmm.cc): weight = occupancy share, ML mean
and variance, variance floored at `min_variance`, Gaussians with occupancy <= `min_gaussian_occupancy`
(or weight <= `min_gaussian_weight`) removed unless they are the pdf's last one.
`split_targets` / `split_gmm` follow GetSplitTargets and DiagGmm::Split (the heaviest component is
halved, the two means moved by -/+ perturb_factor * sqrt(var) * randn), but draw from a
`np.random.Generator` seeded from the config: Kaldi's own RNG cannot be seeded from Python, so three
runs used to give three different models. Why not kaldi-hmm-gmm's updater: its accumulators can
only be filled one frame per call (see gmm_stats.py).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from asr_kd.align.gmm_stats import GmmStats
from asr_kd.kaldi.model_io import DiagGmms

LOG_2PI = float(np.log(2 * np.pi))


@dataclass
class UpdateOptions:
    """Kaldi's MleDiagGmmOptions and gmm-est's mixing-up options (same defaults)."""
    min_gaussian_occupancy: float = 10.0
    min_gaussian_weight: float = 1e-5
    min_variance: float = 1e-3
    perturb_factor: float = 0.01     # gmm-est --perturb-factor
    power: float = 0.25              # gmm-est --power: Gaussians shared among pdfs by occupancy^power
    min_count: float = 20.0          # gmm-est --min-count: frames per Gaussian when mixing up


@dataclass
class NaturalGmm:
    """One pdf's GMM in natural parameters (float64)."""
    weights: np.ndarray   # (n,)
    means: np.ndarray     # (n, D)
    vars: np.ndarray      # (n, D)


def natural(gmms: DiagGmms, pdf: int) -> NaturalGmm:
    rows = slice(gmms.offsets[pdf], gmms.offsets[pdf + 1])
    inv_vars = gmms.inv_vars[rows].astype(np.float64)
    return NaturalGmm(gmms.weights[rows].astype(np.float64), gmms.means_invvars[rows] / inv_vars, 1.0 / inv_vars)


def ml_objective(gmm: NaturalGmm, occ, sum_x, sum_x2) -> float:
    """Log-likelihood of the statistics under `gmm` (Kaldi's MlObjective, written in natural form)."""
    inv = 1.0 / gmm.vars
    per_gauss = (occ * (np.log(np.maximum(gmm.weights, 1e-300)) - 0.5 * (gmm.means.shape[1] * LOG_2PI
                                                                         + np.log(gmm.vars).sum(1)
                                                                         + (gmm.means ** 2 * inv).sum(1)))
                 + (sum_x * gmm.means * inv).sum(1) - 0.5 * (sum_x2 * inv).sum(1))
    return float(per_gauss.sum())


def update_gmm(old: NaturalGmm, occ, sum_x, sum_x2, opts: UpdateOptions) -> tuple[NaturalGmm, float]:
    """MleDiagGmmUpdate of one pdf. Returns (new GMM, objective improvement)."""
    n = len(occ)
    occ_sum = occ.sum()
    prob = occ / occ_sum if occ_sum > 0 else np.full(n, 1.0 / n)
    keep = (occ > opts.min_gaussian_occupancy) & (prob > opts.min_gaussian_weight)
    safe = np.where(keep, occ, 1.0)[:, None]
    means = np.where(keep[:, None], sum_x / safe, old.means)
    vars_ = np.where(keep[:, None], np.maximum(sum_x2 / safe - means ** 2, opts.min_variance), old.vars)
    weights = np.where(keep, prob, np.maximum(prob, opts.min_gaussian_weight))
    new = NaturalGmm(weights, means, vars_)
    impr = ml_objective(new, occ, sum_x, sum_x2) - ml_objective(old, occ, sum_x, sum_x2)
    removable = np.flatnonzero(~keep)[: n - 1]           # never the last Gaussian
    if len(removable):
        kept = np.setdiff1d(np.arange(n), removable)
        new = NaturalGmm(weights[kept] / weights[kept].sum(), means[kept], vars_[kept])
    return new, impr


def split_targets(occs: np.ndarray, target: int, power: float, min_count: float) -> np.ndarray:
    """Kaldi's GetSplitTargets: Gaussians per pdf, given out greedily by occupancy^power per Gaussian."""
    heap = [(-(occ ** power), pdf, 1) for pdf, occ in enumerate(np.asarray(occs, np.float64))]
    heapq.heapify(heap)
    total = len(occs)
    while total < target and heap[0][0] < 0:
        _, pdf, count = heapq.heappop(heap)
        if (count + 1) * min_count >= occs[pdf]:
            heapq.heappush(heap, (0.0, pdf, count))       # min-count reached: no more splits here
        else:
            heapq.heappush(heap, (-(occs[pdf] ** power) / (count + 1), pdf, count + 1))
            total += 1
    targets = np.zeros(len(occs), np.int64)
    for _, pdf, count in heap:
        targets[pdf] = count
    return targets


def split_gmm(gmm: NaturalGmm, target: int, perturb_factor: float, rng: np.random.Generator) -> NaturalGmm:
    """DiagGmm::Split: split the heaviest component until there are `target`."""
    weights, means, vars_ = list(gmm.weights), list(gmm.means), list(gmm.vars)
    while len(weights) < target:
        i = int(np.argmax(weights))
        weights[i] /= 2
        shift = perturb_factor * rng.standard_normal(len(means[i])) * np.sqrt(vars_[i])
        weights.append(weights[i])
        means.append(means[i] + shift)
        vars_.append(vars_[i].copy())
        means[i] = means[i] - shift
    return NaturalGmm(np.array(weights), np.array(means), np.array(vars_))


def estimate(gmms: DiagGmms, stats: GmmStats, opts: UpdateOptions, *, mixup: int = 0,
             rng: np.random.Generator | None = None) -> tuple[DiagGmms, dict]:
    """gmm-est's GMM half: ML update of every pdf, then split up to `mixup` Gaussians in total.

    Returns the new stacked model (gconsts left to Kaldi: see `asr_kd.kaldi.model_io.am_from_stacked`)
    and what gmm-est logs.
    """
    o = gmms.offsets
    occs = np.add.reduceat(stats.occupancy, o[:-1]) if len(stats.occupancy) else np.zeros(gmms.num_pdfs)
    new, impr = [], 0.0
    for pdf in range(gmms.num_pdfs):
        rows = slice(o[pdf], o[pdf + 1])
        gmm, gain = update_gmm(natural(gmms, pdf), stats.occupancy[rows], stats.sum_x[rows], stats.sum_x2[rows], opts)
        new.append(gmm)
        impr += gain
    if mixup > sum(len(g.weights) for g in new):
        if rng is None:
            raise ValueError("mixing up needs a seeded rng")
        targets = split_targets(occs, mixup, opts.power, opts.min_count)
        new = [split_gmm(g, int(t), opts.perturb_factor, rng) if t > len(g.weights) else g
               for g, t in zip(new, targets)]
    count = float(stats.occupancy.sum())
    return to_stacked(new), {"gmm_impr_per_frame": impr / max(count, 1.0), "num_gauss": sum(len(g.weights) for g in new)}


def to_stacked(gmms: list[NaturalGmm]) -> DiagGmms:
    """Natural float64 parameters -> Kaldi's float32 exponential form (as DiagGmmNormal::CopyToDiagGmm)."""
    inv_vars = [1.0 / g.vars for g in gmms]
    sizes = [len(g.weights) for g in gmms]
    return DiagGmms(offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                    weights=np.concatenate([g.weights for g in gmms]).astype(np.float32),
                    inv_vars=np.concatenate(inv_vars).astype(np.float32),
                    means_invvars=np.concatenate([g.means * iv for g, iv in zip(gmms, inv_vars)]).astype(np.float32),
                    gconsts=np.zeros(sum(sizes), np.float32))

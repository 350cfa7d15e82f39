"""GMM sufficient statistics from alignments (Kaldi's gmm-acc-stats-ali), one matrix product per pdf.

Frames are grouped by the pdf their alignment assigns; each pdf's Gaussian posteriors over all its
frames come from one (frames x Gaussians) log-likelihood matrix, and the statistics (occupancy,
sum x, sum x^2, in float64) from two more products. kaldi-hmm-gmm only accumulates one frame per
Python call (and its per-pdf accumulators come back as copies), so the E-step is done here in numpy.

Statistics of a set are the sum of its shards' statistics, added in shard order: the same shards
give the same bytes however many processes computed them. The products are small ((frames of one
pdf) x 2D x (its Gaussians)), so BLAS runs on one thread (threadpoolctl): its worker threads
spin-waiting next to --nj processes cost 6x the CPU time, measured on AN4.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from asr_kd.kaldi.model_io import DiagGmms


@dataclass
class GmmStats:
    """Per-Gaussian statistics (rows as in `DiagGmms`), transition-id counts, and the data log-likelihood."""
    occupancy: np.ndarray    # (G,) float64
    sum_x: np.ndarray        # (G, D) float64
    sum_x2: np.ndarray       # (G, D) float64
    transitions: np.ndarray  # (num_tids + 1,) float64, index 0 unused
    loglike: float = 0.0
    frames: int = 0

    @classmethod
    def zeros(cls, num_gauss: int, dim: int, num_tids: int) -> "GmmStats":
        return cls(np.zeros(num_gauss), np.zeros((num_gauss, dim)), np.zeros((num_gauss, dim)),
                   np.zeros(num_tids + 1))

    def add(self, other: "GmmStats") -> "GmmStats":
        self.occupancy += other.occupancy
        self.sum_x += other.sum_x
        self.sum_x2 += other.sum_x2
        self.transitions += other.transitions
        self.loglike += other.loglike
        self.frames += other.frames
        return self


def sum_stats(parts: list[GmmStats]) -> GmmStats:
    """The sum of shard statistics, in the given (shard) order."""
    total = GmmStats.zeros(len(parts[0].occupancy), parts[0].sum_x.shape[1], len(parts[0].transitions) - 1)
    for part in parts:
        total.add(part)
    return total


def component_loglikes(x: np.ndarray, gconsts, means_invvars, inv_vars) -> np.ndarray:
    """(frames, Gaussians) log w_g N(x; g) in Kaldi's exponential form, float64."""
    x = np.asarray(x, np.float64)
    return np.asarray(gconsts, np.float64) + _with_squares(x) @ _exp_form(means_invvars, inv_vars)


def _with_squares(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, x * x], axis=1)


def _exp_form(means_invvars, inv_vars) -> np.ndarray:
    """(2D, G): x . means_invvars - 0.5 x^2 . inv_vars as one product with [x, x^2]."""
    return np.concatenate([np.asarray(means_invvars, np.float64), -0.5 * np.asarray(inv_vars, np.float64)], axis=1).T


def accumulate(gmms: DiagGmms, feats: np.ndarray, tids: np.ndarray, tid_to_pdf: np.ndarray,
               stats: GmmStats) -> GmmStats:
    """Add the statistics of frames `feats` (T, D) aligned to transition ids `tids` (T,) to `stats`."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _accumulate(gmms, feats, tids, tid_to_pdf, stats)


def _accumulate(gmms: DiagGmms, feats, tids, tid_to_pdf, stats: GmmStats) -> GmmStats:
    tids = np.asarray(tids, np.int64)
    pdfs = np.asarray(tid_to_pdf)[tids]
    stats.transitions += np.bincount(tids, minlength=len(stats.transitions))
    order = np.argsort(pdfs, kind="stable")
    x2 = _with_squares(np.asarray(feats, np.float64)[order])           # frames grouped by pdf
    bounds = np.searchsorted(pdfs[order], np.arange(gmms.num_pdfs + 1))
    dim = gmms.dim
    for pdf in np.flatnonzero(np.diff(bounds)):
        xx = x2[bounds[pdf]:bounds[pdf + 1]]
        rows = slice(gmms.offsets[pdf], gmms.offsets[pdf + 1])
        ll = xx @ _exp_form(gmms.means_invvars[rows], gmms.inv_vars[rows]) + gmms.gconsts[rows].astype(np.float64)
        peak = ll.max(1, keepdims=True)
        post = np.exp(ll - peak)
        total = post.sum(1, keepdims=True)
        post /= total
        stats.loglike += float((peak + np.log(total)).sum())
        stats.occupancy[rows] += post.sum(0)
        moments = post.T @ xx
        stats.sum_x[rows] += moments[:, :dim]
        stats.sum_x2[rows] += moments[:, dim:]
    stats.frames += len(tids)
    return stats


@dataclass
class Moments:
    """Frame count, sum and sum of squares of features (float64), for global mean/variance."""
    count: float
    sum: np.ndarray
    sumsq: np.ndarray

    def add(self, other: "Moments") -> "Moments":
        return Moments(self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq)

    def mean_var(self, floor: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
        mean = self.sum / max(self.count, 1.0)
        return mean, np.maximum(self.sumsq / max(self.count, 1.0) - mean ** 2, floor)


def moments(chunks) -> Moments:
    """Moments of an iterable of (T, D) feature arrays, one chunk in memory at a time."""
    out = None
    for x in chunks:
        x = np.asarray(x, np.float64)
        part = Moments(float(len(x)), x.sum(0), (x * x).sum(0))
        out = part if out is None else out.add(part)
    return out


def pdf_posteriors(gmms: DiagGmms, feats: np.ndarray, pdfs: np.ndarray, frame_weights: np.ndarray | None = None):
    """Yield (Gaussian rows, frame indices, weighted posteriors (frames, Gaussians)) per aligned pdf.

    The Gaussian-level posteriors that gmm-acc-mllt and gmm-est-fmllr compute frame by frame
    (each frame's pdf from the alignment, times its weight: 0 for silence in Kaldi's SAT
    recipes), one (frames x Gaussians) matrix per pdf. Frames of weight 0 are skipped.
    """
    pdfs = np.asarray(pdfs, np.int64)
    keep = np.ones(len(pdfs), bool) if frame_weights is None else np.asarray(frame_weights) > 0
    index = np.flatnonzero(keep)
    index = index[np.argsort(pdfs[index], kind="stable")]
    bounds = np.searchsorted(pdfs[index], np.arange(gmms.num_pdfs + 1))
    x = np.asarray(feats, np.float64)
    for pdf in np.flatnonzero(np.diff(bounds)):
        frames = index[bounds[pdf]:bounds[pdf + 1]]
        rows = slice(gmms.offsets[pdf], gmms.offsets[pdf + 1])
        ll = component_loglikes(x[frames], gmms.gconsts[rows], gmms.means_invvars[rows], gmms.inv_vars[rows])
        post = np.exp(ll - ll.max(1, keepdims=True))
        post /= post.sum(1, keepdims=True)
        if frame_weights is not None:
            post *= np.asarray(frame_weights, np.float64)[frames, None]
        yield rows, frames, post

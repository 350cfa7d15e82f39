"""Linear discriminant analysis of spliced features over tied-state classes (Kaldi's acc-lda + est-lda).

Written in numpy because kaldi-hmm-gmm binds no LDA. As Kaldi's LdaEstimate::Estimate: with T
the total and B the between-class covariance, W = T - B the within-class covariance and
W = C C^T its Cholesky factor, the rows of the transform are the top `dim` eigenvectors of
C^-1 B C^-T mapped back through C^-1. The projected features therefore have unit within-class
covariance (Kaldi's within-class normalisation) and a diagonal between-class covariance, whose
diagonal is the eigenvalues, largest first.

Classes are pdfs of the previous system's alignment; silence frames get weight 0 (Kaldi's
train_lda_mllt.sh: `weight-silence-post 0.0`). Statistics are float64 sums, added in shard order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asr_kd.errors import AsrKdError


@dataclass
class LdaStats:
    count: np.ndarray      # (C,) weighted frames per class
    sum: np.ndarray        # (C, D)
    scatter: np.ndarray    # (D, D) sum of w x x^T over all frames

    @classmethod
    def zeros(cls, num_classes: int, dim: int) -> "LdaStats":
        return cls(np.zeros(num_classes), np.zeros((num_classes, dim)), np.zeros((dim, dim)))

    def add(self, other: "LdaStats") -> "LdaStats":
        self.count += other.count
        self.sum += other.sum
        self.scatter += other.scatter
        return self


def accumulate_lda(stats: LdaStats, feats: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> LdaStats:
    """Add frames `feats` (T, D) of classes (T,) with per-frame weights (T,) (acc-lda)."""
    x = np.asarray(feats, np.float64)
    w = np.asarray(weights, np.float64)
    classes = np.asarray(classes, np.int64)
    order = np.argsort(classes, kind="stable")
    bounds = np.searchsorted(classes[order], np.arange(len(stats.count) + 1))
    wx = x[order] * w[order, None]
    for c in np.flatnonzero(np.diff(bounds)):
        stats.count[c] += w[order][bounds[c]:bounds[c + 1]].sum()
        stats.sum[c] += wx[bounds[c]:bounds[c + 1]].sum(0)
    stats.scatter += (x * w[:, None]).T @ x
    return stats


def estimate_lda(stats: LdaStats, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """est-lda: the (dim, D) transform and the between-class eigenvalues (largest first)."""
    total = stats.count.sum()
    num_classes = int((stats.count > 0).sum())
    if dim > stats.sum.shape[1]:
        raise AsrKdError(f"LDA: cannot project {stats.sum.shape[1]}-dim features to {dim} dims")
    if total <= 0 or num_classes < 2:
        raise AsrKdError(f"LDA: needs frames of at least 2 classes (got {num_classes} classes, {total:g} frames)")
    mean = stats.sum.sum(0) / total
    total_covar = stats.scatter / total - np.outer(mean, mean)
    seen = stats.count > 0
    class_means = stats.sum[seen] / stats.count[seen, None]
    between = (class_means * stats.count[seen, None]).T @ class_means / total - np.outer(mean, mean)
    within = total_covar - between
    try:
        chol = np.linalg.cholesky(within)
    except np.linalg.LinAlgError:
        raise AsrKdError("LDA: the within-class covariance is singular (constant or duplicated feature "
                         "dimensions?); check the feature store") from None
    chol_inv = np.linalg.inv(chol)
    eigvals, eigvecs = np.linalg.eigh(chol_inv @ between @ chol_inv.T)
    top = np.argsort(eigvals)[::-1][:dim]
    return eigvecs[:, top].T @ chol_inv, eigvals[top]

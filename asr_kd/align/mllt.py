"""Maximum likelihood linear transform / semi-tied covariance (Gales 1999; Kaldi's gmm-acc-mllt + est-mllt).

Written in numpy because kaldi-hmm-gmm binds no MLLT. A square A is applied to the features
(and the model means), variances stay diagonal. Per feature dimension i the statistics are

    G_i = sum_{t,m} gamma_m(t) (x_t - mu_m)(x_t - mu_m)^T / sigma^2_{m,i},    beta = sum gamma,

and the auxiliary function beta log|det A| - 1/2 sum_i a_i G_i a_i^T is maximised row by row:
a_i = c_i G_i^-1 sqrt(beta / (c_i G_i^-1 c_i^T)), c_i the i-th row of A's cofactor matrix,
200 sweeps from the identity (MlltAccs::Update). The model's means become A mu.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from asr_kd.align.gmm_stats import pdf_posteriors
from asr_kd.kaldi.model_io import DiagGmms

log = logging.getLogger(__name__)


@dataclass
class MlltStats:
    beta: float
    G: np.ndarray    # (D, D, D)

    @classmethod
    def zeros(cls, dim: int) -> "MlltStats":
        return cls(0.0, np.zeros((dim, dim, dim)))

    def add(self, other: "MlltStats") -> "MlltStats":
        self.beta += other.beta
        self.G += other.G
        return self


def accumulate_mllt(stats: MlltStats, gmms: DiagGmms, feats: np.ndarray, pdfs: np.ndarray,
                    weights: np.ndarray | None = None) -> MlltStats:
    """gmm-acc-mllt over frames aligned to `pdfs`, weighted by `weights` (0 for silence)."""
    x = np.asarray(feats, np.float64)
    inv_vars = gmms.inv_vars.astype(np.float64)
    means = gmms.means_invvars.astype(np.float64) / inv_vars
    for rows, frames, post in pdf_posteriors(gmms, x, pdfs, weights):
        for g, m in enumerate(range(rows.start, rows.stop)):
            diff = x[frames] - means[m]
            scatter = (diff * post[:, g, None]).T @ diff
            stats.G += inv_vars[m][:, None, None] * scatter[None]
        stats.beta += float(post.sum())
    return stats


def mllt_objective(A: np.ndarray, stats: MlltStats) -> float:
    _, logdet = np.linalg.slogdet(A)
    return stats.beta * logdet - 0.5 * float(np.einsum("ij,ijk,ik->", A, stats.G, A))


def estimate_mllt(stats: MlltStats, sweeps: int = 200) -> tuple[np.ndarray, float]:
    """est-mllt: (A, auxiliary-function improvement per frame over the identity).

    Kaldi warns under 10 frames per dimension and updates anyway; under 2 per dimension the
    statistics are singular, so the identity is kept here.
    """
    dim = stats.G.shape[0]
    A = np.eye(dim)
    if stats.beta < 10 * dim:
        log.warning("MLLT: %s count %.1f for %d dimensions", "very small" if stats.beta > 2 * dim else
                    "insufficient (identity kept)", stats.beta, dim)
        if stats.beta <= 2 * dim:
            return A, 0.0
    G_inv = np.linalg.inv(stats.G)
    before = mllt_objective(A, stats)
    for _ in range(sweeps):
        for i in range(dim):
            cofactor = np.linalg.inv(A)[:, i]            # row i of A^-T (the cofactor up to det A)
            row = G_inv[i] @ cofactor
            A[i] = row * np.sqrt(stats.beta / (cofactor @ row))
    return A, (mllt_objective(A, stats) - before) / stats.beta


def transform_means(gmms: DiagGmms, A: np.ndarray) -> DiagGmms:
    """gmm-transform-means: every mean mu becomes A mu (variances kept; gconsts left to Kaldi)."""
    inv_vars = gmms.inv_vars.astype(np.float64)
    means = (gmms.means_invvars.astype(np.float64) / inv_vars) @ A.T
    return DiagGmms(gmms.offsets, gmms.weights, gmms.inv_vars, (means * inv_vars).astype(np.float32),
                    np.zeros_like(gmms.gconsts))

"""Feature-space MLLR, one affine transform per speaker (Gales 1998; Kaldi's gmm-est-fmllr, full update).

Written in numpy because kaldi-hmm-gmm binds no fMLLR. With xi_t = [x_t; 1] the statistics are

    K   = sum_{t,m} gamma_m(t) (mu_m / sigma^2_m) xi_t^T                     (D, D+1)
    G_i = sum_{t,m} gamma_m(t) xi_t xi_t^T / sigma^2_{m,i}                   (D+1, D+1) per dim i
    beta = sum gamma

and W = [A b] maximises beta log|det A| + sum_i (w_i k_i^T - 1/2 w_i G_i w_i^T) row by row
(FmllrDiagGmmAccs / ComputeFmllrMatrixDiagGmmFull): with p_i the i-th cofactor row (extended
by 0), w_i = (alpha p_i + k_i) G_i^-1 where alpha solves alpha^2 e1 + alpha e2 - beta = 0,
e1 = p_i G_i^-1 p_i^T, e2 = p_i G_i^-1 k_i^T, taking the root with the larger objective.
Speakers with fewer than `min_count` frames keep the identity (Kaldi's --fmllr-min-count).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asr_kd.align.gmm_stats import pdf_posteriors
from asr_kd.kaldi.model_io import DiagGmms


@dataclass
class FmllrStats:
    beta: float
    K: np.ndarray    # (D, D+1)
    G: np.ndarray    # (D, D+1, D+1)

    @classmethod
    def zeros(cls, dim: int) -> "FmllrStats":
        return cls(0.0, np.zeros((dim, dim + 1)), np.zeros((dim, dim + 1, dim + 1)))

    def add(self, other: "FmllrStats") -> "FmllrStats":
        self.beta += other.beta
        self.K += other.K
        self.G += other.G
        return self


def identity(dim: int) -> np.ndarray:
    return np.hstack([np.eye(dim), np.zeros((dim, 1))])


def accumulate_fmllr(stats: FmllrStats, gmms: DiagGmms, feats: np.ndarray, pdfs: np.ndarray,
                     weights: np.ndarray | None = None) -> FmllrStats:
    """Add frames of one speaker (aligned to `pdfs`, weighted by `weights`)."""
    x = np.asarray(feats, np.float64)
    xi = np.hstack([x, np.ones((len(x), 1))])
    inv_vars = gmms.inv_vars.astype(np.float64)
    means_invvars = gmms.means_invvars.astype(np.float64)
    dim = x.shape[1]
    upper = np.triu_indices(dim + 1)                # G_i is symmetric: accumulate its upper triangle
    G_upper = np.zeros((dim, len(upper[0])))
    for rows, frames, post in pdf_posteriors(gmms, x, pdfs, weights):
        xf = xi[frames]
        stats.K += means_invvars[rows].T @ (post.T @ xf)
        per_dim = post @ inv_vars[rows]             # (n, D): sum_m gamma / sigma^2_{m,i}
        G_upper += per_dim.T @ (xf[:, upper[0]] * xf[:, upper[1]])
        stats.beta += float(post.sum())
    G = np.zeros((dim, dim + 1, dim + 1))
    G[:, upper[0], upper[1]] = G_upper
    G[:, upper[1], upper[0]] = G_upper
    stats.G += G
    return stats


def fmllr_objective(W: np.ndarray, stats: FmllrStats) -> float:
    _, logdet = np.linalg.slogdet(W[:, :-1])
    return stats.beta * logdet + float((W * stats.K).sum()) - 0.5 * float(np.einsum("ij,ijk,ik->", W, stats.G, W))


def estimate_fmllr(stats: FmllrStats, iters: int = 40, min_count: float = 20.0) -> tuple[np.ndarray, float]:
    """gmm-est-fmllr (full): ([A b], objective improvement per frame over the identity)."""
    dim = stats.K.shape[0]
    W = identity(dim)
    if stats.beta < min_count:
        return W, 0.0
    G_inv = np.linalg.inv(stats.G)
    before = fmllr_objective(W, stats)
    for _ in range(iters):
        for i in range(dim):
            W[i] = _best_row(np.append(np.linalg.inv(W[:, :-1])[:, i], 0.0), stats.K[i], G_inv[i], stats.beta)
    gain = fmllr_objective(W, stats) - before
    if gain < 0 and not np.isclose(gain + before, before):     # as Kaldi: never apply a worse transform
        return identity(dim), 0.0
    return W, gain / stats.beta


def _best_row(p: np.ndarray, k: np.ndarray, G_inv: np.ndarray, beta: float) -> np.ndarray:
    """The row maximising beta log|w.p| + w.k - 1/2 w G w^T (both roots of the quadratic tried)."""
    e1, e2 = p @ G_inv @ p, p @ G_inv @ k
    disc = np.sqrt(e2 * e2 + 4 * e1 * beta)
    best, best_obj = None, -np.inf
    for alpha in ((-e2 + disc) / (2 * e1), (-e2 - disc) / (2 * e1)):
        obj = beta * np.log(abs(alpha * e1 + e2)) - 0.5 * alpha * alpha * e1
        if obj > best_obj:
            best, best_obj = alpha, obj
    return (best * p + k) @ G_inv


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """compose-transforms --b-is-affine: applying `inner` then `outer` ([A b] each) as one [A b]."""
    return np.hstack([outer[:, :-1] @ inner[:, :-1], (outer[:, :-1] @ inner[:, -1] + outer[:, -1])[:, None]])

"""Specialist models (Hinton, Vinyals & Dean 2015 §5): pdf clusters, the dustbin, the combination.

The math only; training and evaluation on a corpus are in specialist_runs.py.

Clusters. The generalist's (or ensemble's) predicted distributions over a sample of N training
frames form P (N, C); its C x C covariance has one column per pdf, and pdfs that the model
confuses (predicts together) have similar columns. k-means on those columns (the paper's choice)
gives M clusters. Each column is first scaled to a correlation column with its diagonal entry
zeroed (`pdf_profiles`): measured on AN4 (500 pdfs, 30k frames, M = 12), raw covariance columns
are dominated by the variance of the few frequent pdfs (10 singleton clusters and one of 472
pdfs), and the diagonal 1 of a correlation column makes all columns nearly equidistant; the
zero-diagonal correlation column says only WITH WHICH pdfs a pdf is predicted, which is what
confusability is (70% of the generalist's frame errors then fall inside one cluster). numpy
k-means, not a library: sklearn and scipy are not dependencies here, and Lloyd's algorithm with
k-means++ seeding is ~30 lines whose result depends only on `seed` (tested).
`overlap` > 0 lets a pdf also join every cluster whose centroid is within (1 + overlap) x the
distance to its own centroid, so a pdf can be covered by several specialists (the paper's Table 4
counts test cases by how many specialists cover the correct class); `overlap` = 0 is plain k-means.

Dustbin. A specialist predicts its cluster's pdfs plus one "dustbin" class standing for every
other pdf: a full distribution maps to (cluster pdfs, sum of the rest), a label to its index in
the cluster or to the dustbin index `len(cluster)`.

Combination (paper §5, eq. for q). For a frame, the active specialists A are those whose cluster
holds one of the generalist's top-n pdfs; the combined distribution q over all C pdfs minimises

    KL(p_g || q) + sum_{m in A} KL(p_m || q_m),   q_m = (q on cluster m, sum of q off cluster m).

Up to constants this is the negative log-likelihood of "observations" p_g (exact pdfs) and p_m
(exact on the cluster, coarsened to the dustbin set off it), so it is solved exactly by EM for
coarsened multinomial data: every step
    q <- (p_g + sum_m [p_m on cluster m  +  p_m(dustbin) * q / q(off m) off cluster m]) / (1 + |A|)
never increases the (convex) objective and its fixed points are its minima (the KKT conditions
on the simplex), without the step size a gradient method on log q would need. With no active
specialist the first step returns p_g itself.
"""
from __future__ import annotations

import numpy as np
import torch

from asr_kd.errors import AsrKdError


# ---------------------------------------------------------------- clustering ----------------
def prediction_covariance(probs: np.ndarray) -> np.ndarray:
    """(C, C) covariance over frames of predicted distributions `probs` (N, C); column c describes pdf c."""
    if probs.ndim != 2 or len(probs) < 2:
        raise AsrKdError(f"prediction covariance needs (frames >= 2, pdfs) probabilities, got shape {probs.shape}")
    return np.cov(np.asarray(probs, dtype=np.float64), rowvar=False)


def pdf_profiles(cov: np.ndarray) -> np.ndarray:
    """(C, C) rows = the covariance columns scaled to correlations, diagonal zeroed (module docstring);
    a pdf never predicted (zero variance) gets an all-zero profile."""
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    scale = np.outer(sd, sd)
    corr = np.divide(cov, scale, out=np.zeros_like(cov), where=scale > 0)
    np.fill_diagonal(corr, 0.0)
    return corr.T


def kmeans(points: np.ndarray, k: int, seed: int, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (k, D), assignment (N,)): Lloyd's algorithm from k-means++ seeds drawn with `seed`.

    An emptied cluster is re-seeded with the point farthest from its centroid, so all k stay used.
    """
    points = np.asarray(points, dtype=np.float64)
    if not 1 <= k <= len(points):
        raise AsrKdError(f"k-means: cannot make {k} clusters of {len(points)} points")
    rng = np.random.default_rng(seed)
    centroids = kmeans_pp(points, k, rng)
    assign = np.full(len(points), -1)
    for _ in range(iters):
        dist = sq_distances(points, centroids)
        new = dist.argmin(1)
        for c in np.setdiff1d(np.arange(k), new):  # empty cluster: take the worst-fitted point
            fit = dist[np.arange(len(points)), new]
            fit[np.bincount(new, minlength=k)[new] < 2] = -1.0  # never empty another cluster
            far = int(fit.argmax())
            new[far] = c
            dist[far] = 0.0
        if np.array_equal(new, assign):
            break
        assign = new
        centroids = np.stack([points[assign == c].mean(0) for c in range(k)])
    return centroids, assign


def kmeans_pp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next seed drawn with probability ~ squared distance."""
    centroids = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = sq_distances(points, np.stack(centroids)).min(1)
        total = d2.sum()
        pick = rng.choice(len(points), p=d2 / total) if total > 0 else rng.integers(len(points))
        centroids.append(points[pick])
    return np.stack(centroids)


def sq_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, k) squared Euclidean distances, clipped at 0 (the expanded form can round below it)."""
    d2 = (points ** 2).sum(1)[:, None] - 2 * points @ centroids.T + (centroids ** 2).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def cluster_pdfs(probs: np.ndarray, num_clusters: int, seed: int, overlap: float = 0.0,
                 iters: int = 100) -> list[list[int]]:
    """Pdf sets of the specialists: k-means on the covariance columns of `probs` (N, C), widened by `overlap`."""
    if overlap < 0:
        raise AsrKdError(f"specialists.overlap must be >= 0, got {overlap}")
    profiles = pdf_profiles(prediction_covariance(probs))
    centroids, assign = kmeans(profiles, num_clusters, seed, iters)
    dist = np.sqrt(sq_distances(profiles, centroids))
    own = dist[np.arange(len(profiles)), assign]
    member = dist <= (1.0 + overlap) * own[:, None] + 1e-12
    member[np.arange(len(profiles)), assign] = True
    return [np.nonzero(member[:, m])[0].tolist() for m in range(num_clusters)]


def coverage(clusters: list[list[int]], num_pdfs: int) -> np.ndarray:
    """(C,) how many specialists' clusters hold each pdf."""
    count = np.zeros(num_pdfs, dtype=np.int64)
    for pdfs in clusters:
        count[pdfs] += 1
    return count


# ---------------------------------------------------------------- the dustbin ---------------
def dustbin_labels(labels: torch.Tensor, cluster: list[int], num_pdfs: int) -> torch.Tensor:
    """Pdf labels -> a specialist's classes: index within `cluster`, len(cluster) = dustbin; -1 stays -1."""
    table = torch.full((num_pdfs + 1,), len(cluster), dtype=torch.long, device=labels.device)
    table[torch.as_tensor(cluster, dtype=torch.long, device=labels.device)] = torch.arange(len(cluster),
                                                                                          device=labels.device)
    table[num_pdfs] = -1  # index -1 reads this slot
    return table[labels.long()]


def dustbin_probs(probs: torch.Tensor, cluster: list[int]) -> torch.Tensor:
    """(B, C) distributions over all pdfs -> (B, len(cluster) + 1): the cluster's pdfs, then the rest summed."""
    idx = torch.as_tensor(cluster, dtype=torch.long, device=probs.device)
    inside = probs[:, idx]
    return torch.cat([inside, (probs.sum(1) - inside.sum(1)).clamp_min(0)[:, None]], dim=1)


# ---------------------------------------------------------------- combination ---------------
def cluster_matrix(clusters: list[list[int]], num_pdfs: int, device=None) -> torch.Tensor:
    """(M, C) float64 0/1 membership of pdfs in clusters."""
    member = torch.zeros(len(clusters), num_pdfs, dtype=torch.float64, device=device)
    for m, pdfs in enumerate(clusters):
        member[m, torch.as_tensor(pdfs, dtype=torch.long, device=device)] = 1.0
    return member


def active_specialists(p_general: torch.Tensor, member: torch.Tensor, top_n: int = 1) -> torch.Tensor:
    """(B, M) bool: specialist m is active where its cluster holds one of the generalist's top-n pdfs."""
    top = p_general.topk(min(top_n, p_general.shape[1]), dim=1).indices  # (B, n)
    return member.T[top].amax(1) > 0  # (B, n, M) -> (B, M)


def combine(p_general: torch.Tensor, specialist_probs: list[torch.Tensor], clusters: list[list[int]],
            active: torch.Tensor, iters: int = 50, tol: float = 1e-7) -> torch.Tensor:
    """(B, C) q minimising KL(p_g||q) + sum_{active m} KL(p_m||q_m) by EM (module docstring).

    `specialist_probs[m]`: (B, len(clusters[m]) + 1) specialist m's distribution (dustbin last);
    `active`: (B, M) bool. Computed in float64; stops when no entry of q moves by more than `tol`.
    """
    p_g = p_general.double()
    b, num_pdfs = p_g.shape
    if active.shape != (b, len(clusters)) or len(specialist_probs) != len(clusters):
        raise AsrKdError(f"combine: {len(clusters)} clusters, {len(specialist_probs)} specialist outputs, "
                         f"activity of shape {tuple(active.shape)} for {b} frames")
    off = 1.0 - cluster_matrix(clusters, num_pdfs, p_g.device)  # (M, C): 1 where pdf is in m's dustbin
    act = active.double()
    exact = p_g.clone()  # p_g + sum over active m of p_m on its cluster
    dust = torch.zeros(b, len(clusters), dtype=torch.float64, device=p_g.device)
    for m, (pdfs, p_m) in enumerate(zip(clusters, specialist_probs)):
        p_m = p_m.double()
        exact[:, pdfs] += act[:, m, None] * p_m[:, :-1]
        dust[:, m] = act[:, m] * p_m[:, -1]
    weight = 1.0 + act.sum(1, keepdim=True)
    q = p_g
    for _ in range(iters):
        off_mass = (q @ off.T).clamp_min(1e-300)  # (B, M): q summed over each dustbin set
        new = (exact + q * ((dust / off_mass) @ off)) / weight
        done = (new - q).abs().max() <= tol
        q = new
        if done:
            break
    return q


def combination_objective(q: torch.Tensor, p_general: torch.Tensor, specialist_probs: list[torch.Tensor],
                          clusters: list[list[int]], active: torch.Tensor) -> torch.Tensor:
    """(B,) KL(p_g||q) + sum_{active m} KL(p_m||q_m): what `combine` minimises (for tests and diagnostics)."""
    def kl(p, r):
        p, r = p.double(), r.double()
        return (torch.xlogy(p, p) - torch.xlogy(p, r)).sum(1)

    total = kl(p_general, q)
    for m, (pdfs, p_m) in enumerate(zip(clusters, specialist_probs)):
        total = total + active[:, m].double() * kl(p_m, dustbin_probs(q, pdfs))
    return total

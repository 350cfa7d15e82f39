"""Known-answer tests of the feature transforms: splicing, LDA, MLLT, fMLLR (asr_kd/align/{lda,mllt,fmllr}.py)."""
import numpy as np
import pytest

from asr_kd.align.fmllr import FmllrStats, accumulate_fmllr, compose, estimate_fmllr, identity
from asr_kd.align.lda import LdaStats, accumulate_lda, estimate_lda
from asr_kd.align.mllt import MlltStats, accumulate_mllt, estimate_mllt, transform_means
from asr_kd.data.feature_view import apply_affine, splice, write_view
from asr_kd.data.store import write_store
from asr_kd.kaldi.model_io import DiagGmms


def diag_gmms(means: np.ndarray, variances: np.ndarray, pdf_sizes: list[int]) -> DiagGmms:
    """Stacked GMMs with Kaldi's gconsts (log w - 1/2 (D log 2pi + log|S| + mu S^-1 mu))."""
    offsets = np.concatenate([[0], np.cumsum(pdf_sizes)]).astype(np.int64)
    weights = np.concatenate([np.full(n, 1.0 / n) for n in pdf_sizes])
    inv = 1.0 / variances
    gconsts = np.log(weights) - 0.5 * (means.shape[1] * np.log(2 * np.pi) + np.log(variances).sum(1)
                                       + (means ** 2 * inv).sum(1))
    return DiagGmms(offsets, weights.astype(np.float32), inv.astype(np.float32), (means * inv).astype(np.float32),
                    gconsts.astype(np.float32))


def test_splice_repeats_edge_frames():
    x = np.arange(5, dtype=np.float64)[:, None] * np.array([[1.0, 10.0]])   # row t = [t, 10 t]
    out = splice(x, 2, 1)
    assert out.shape == (5, 8)
    assert out[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 10]
    assert out[4].tolist() == [2, 20, 3, 30, 4, 40, 4, 40]
    assert out[2].tolist() == [0, 0, 1, 10, 2, 20, 3, 30]


def test_lda_recovers_the_discriminant_direction_and_whitens_within_class():
    rng = np.random.default_rng(0)
    D = 5
    mix = rng.normal(size=(D, D))
    within = mix @ mix.T + 0.5 * np.eye(D)
    direction = rng.normal(size=D)
    classes = rng.integers(0, 3, size=30000)
    offsets = np.array([-2.0, 0.0, 2.0])[classes, None] * direction            # classes differ along `direction`
    x = offsets + rng.multivariate_normal(np.zeros(D), within, size=len(classes))
    stats = accumulate_lda(LdaStats.zeros(3, D), x, classes, np.ones(len(x)))
    M, eigvals = estimate_lda(stats, dim=2)
    expected = np.linalg.solve(within, direction)                               # Fisher's direction W^-1 (mu1 - mu0)
    cos = abs(M[0] @ expected) / np.linalg.norm(M[0]) / np.linalg.norm(expected)
    assert cos > 0.999
    assert eigvals[0] > 1.0 and eigvals[1] < 0.01                               # only one direction separates 3 collinear classes
    projected = x @ M.T
    resid = np.concatenate([projected[classes == c] - projected[classes == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(np.cov(resid.T), np.eye(2), atol=0.03)


def test_lda_ignores_zero_weight_frames():
    rng = np.random.default_rng(1)
    x, classes = rng.normal(size=(2000, 3)), rng.integers(0, 2, size=2000)
    weights = np.where(np.arange(2000) < 1000, 1.0, 0.0)
    full = accumulate_lda(LdaStats.zeros(2, 3), x, classes, weights)
    part = accumulate_lda(LdaStats.zeros(2, 3), x[:1000], classes[:1000], np.ones(1000))
    np.testing.assert_allclose(full.scatter, part.scatter)
    np.testing.assert_allclose(full.sum, part.sum)


def _loglike(gmms: DiagGmms, x: np.ndarray, pdfs: np.ndarray, logdet: float = 0.0) -> float:
    """Average log p(x) of frames under their pdf's GMM, plus the transform's log|det| (Jacobian)."""
    from asr_kd.align.gmm_stats import component_loglikes
    total = 0.0
    for p in range(gmms.num_pdfs):
        rows = slice(gmms.offsets[p], gmms.offsets[p + 1])
        ll = component_loglikes(x[pdfs == p], gmms.gconsts[rows], gmms.means_invvars[rows], gmms.inv_vars[rows])
        total += float(np.logaddexp.reduce(ll, axis=1).sum())
    return total / len(x) + logdet


def _refit_variances(gmms: DiagGmms, x: np.ndarray, pdfs: np.ndarray) -> DiagGmms:
    """ML means and diagonal variances of one-Gaussian pdfs (the M-step after an MLLT update)."""
    means = np.stack([x[pdfs == p].mean(0) for p in range(gmms.num_pdfs)])
    variances = np.stack([x[pdfs == p].var(0) for p in range(gmms.num_pdfs)])
    return diag_gmms(means, variances, [1] * gmms.num_pdfs)


def test_mllt_increases_the_likelihood_every_pass_and_diagonalises_a_shared_covariance():
    rng = np.random.default_rng(2)
    D, P = 4, 6
    rotation, _ = np.linalg.qr(rng.normal(size=(D, D)))
    shared = rotation @ np.diag([4.0, 1.0, 0.3, 0.1]) @ rotation.T               # one full covariance, not diagonal
    pdfs = rng.integers(0, P, size=20000)
    x = rng.normal(scale=3.0, size=(P, D))[pdfs] + rng.multivariate_normal(np.zeros(D), shared, size=len(pdfs))
    gmms = _refit_variances(diag_gmms(np.zeros((P, D)), np.ones((P, D)), [1] * P), x, pdfs)
    A_total, y = np.eye(D), x
    likes = [_loglike(gmms, y, pdfs)]
    for _ in range(3):
        stats = accumulate_mllt(MlltStats.zeros(D), gmms, y, pdfs)
        A, impr = estimate_mllt(stats)
        assert impr >= 0
        y, A_total = y @ A.T, A @ A_total
        gmms = _refit_variances(transform_means(gmms, A), y, pdfs)
        likes.append(_loglike(gmms, y, pdfs, np.linalg.slogdet(A_total)[1]))
    assert all(b > a - 1e-9 for a, b in zip(likes, likes[1:]))
    assert likes[1] > likes[0] + 0.5                                             # the first pass gains most
    transformed = A_total @ shared @ A_total.T
    off = transformed - np.diag(np.diag(transformed))
    assert np.abs(off).max() < 0.02 * np.abs(np.diag(transformed)).max()


def test_fmllr_recovers_a_known_affine_transform():
    """The issue's known answer: features of a speaker = A^-1 (model features - b); fMLLR finds [A b]."""
    rng = np.random.default_rng(3)
    D, P = 5, 12
    means, variances = rng.normal(scale=3.0, size=(P, D)), rng.uniform(0.3, 1.5, size=(P, D))
    gmms = diag_gmms(means, variances, [1] * P)
    pdfs = rng.integers(0, P, size=40000)
    clean = means[pdfs] + rng.normal(size=(len(pdfs), D)) * np.sqrt(variances[pdfs])
    A = np.eye(D) + 0.3 * rng.normal(size=(D, D))
    b = rng.normal(size=D)
    speaker = (clean - b) @ np.linalg.inv(A).T                                   # so that A x + b = clean
    stats = accumulate_fmllr(FmllrStats.zeros(D), gmms, speaker, pdfs)
    W, impr = estimate_fmllr(stats)
    assert impr > 0
    np.testing.assert_allclose(W, np.hstack([A, b[:, None]]), atol=0.03)
    np.testing.assert_allclose(apply_affine(speaker, W), clean, atol=0.2)


def test_fmllr_keeps_identity_below_min_count_and_on_matched_data():
    rng = np.random.default_rng(4)
    D, P = 3, 4
    means, variances = rng.normal(scale=3.0, size=(P, D)), np.ones((P, D))
    gmms = diag_gmms(means, variances, [1] * P)
    pdfs = rng.integers(0, P, size=10)
    x = means[pdfs] + rng.normal(size=(10, D))
    W, impr = estimate_fmllr(accumulate_fmllr(FmllrStats.zeros(D), gmms, x, pdfs), min_count=20.0)
    assert (W == identity(D)).all() and impr == 0.0
    pdfs = rng.integers(0, P, size=50000)
    x = means[pdfs] + rng.normal(size=(50000, D))
    W, _ = estimate_fmllr(accumulate_fmllr(FmllrStats.zeros(D), gmms, x, pdfs))
    np.testing.assert_allclose(W, identity(D), atol=0.03)


def test_compose_applies_inner_then_outer():
    rng = np.random.default_rng(5)
    inner, outer, x = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(7, 3))
    np.testing.assert_allclose(apply_affine(x, compose(outer, inner)), apply_affine(apply_affine(x, inner), outer))


def test_feature_view_splices_transforms_and_adapts_per_speaker(tmp_path):
    rng = np.random.default_rng(6)
    feats = {f"spk{s}-u{i}": rng.normal(size=(6, 4)).astype(np.float32) for s in (1, 2) for i in (1, 2)}
    write_store(tmp_path / "store", sorted(feats.items()), {"config_hash": "x"})
    M = rng.normal(size=(3, 2 * 3))                          # 2 columns spliced +-1 -> 6 -> 3
    fm = {"spk1": rng.normal(size=(3, 4)), "spk2": rng.normal(size=(3, 4))}
    from asr_kd.data.feature_view import fmllr_table, open_feats
    utt2spk = {u: u.split("-")[0] for u in feats}
    write_view(tmp_path / "view", tmp_path / "store", columns=2, left=1, right=1, matrix=M,
               fmllr=fmllr_table(fm, utt2spk))
    view = open_feats(tmp_path / "view")
    for utt, x in feats.items():
        expected = apply_affine(splice(x[:, :2].astype(np.float64), 1, 1) @ M.T, fm[utt2spk[utt]])
        np.testing.assert_allclose(view[utt], expected, rtol=1e-5, atol=1e-5)
    assert view.meta["dim"] == 3 and view.num_rows("spk1-u1") == 6

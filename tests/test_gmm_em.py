"""The numpy E-step / M-step / mixing up against kaldi-hmm-gmm's own, and GMM training that gives the
same bytes twice, for --nj 1 and 4, on a Dask cluster, and after a kill."""
import dataclasses
import hashlib
import shutil

import numpy as np
import pytest

import kaldi_hmm_gmm as khg
from align_synth import make_corpus, make_lang
from asr_kd.align.alignment import AlignConfig, align_data
from asr_kd.align.em import subset
from asr_kd.align.gmm_stats import GmmStats, accumulate, moments
from asr_kd.align.gmm_update import UpdateOptions, estimate, split_gmm, split_targets, natural
from asr_kd.align.mono import MonoConfig, train_mono
from asr_kd.align.tri import TriConfig, train_tri
from asr_kd.data.store import write_store
from asr_kd.kaldi import gmm
from asr_kd.parallel import Jobs

DIM = 4
SMALL = AlignConfig(beam=6.0, retry_beam=24.0, shard_size=7)      # 40 utterances -> 6 shards
MONO = MonoConfig(num_iters=8, max_iter_inc=5, tot_gauss=40, realign_iters=[1, 2, 4, 6], align=SMALL)
TRI = TriConfig(num_leaves=30, tot_gauss=70, num_iters=5, max_iter_inc=3, realign_iters=[3], min_leaf_count=20,
                align=dataclasses.replace(SMALL, beam=10.0, retry_beam=40.0))


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_model(rng, sizes=(3, 1, 4)):
    """A TransitionModel-free AmDiagGmm with pdfs of `sizes` Gaussians, plus frames and their pdfs."""
    gmms = [gmm.make_gmm(rng.dirichlet(np.ones(n)), rng.normal(scale=2, size=(n, DIM)),
                         rng.uniform(0.5, 2, size=(n, DIM))) for n in sizes]
    am = gmm.make_am(gmms)
    x = rng.normal(scale=2, size=(500, DIM)).astype(np.float32)
    pdfs = rng.integers(0, len(sizes), size=500)
    pdfs[:3] = 2            # pdf 2 gets few frames near one corner: its Gaussians fall under min occupancy
    x[pdfs == 2] = 5 + 0.1 * rng.normal(size=((pdfs == 2).sum(), DIM))
    return am, x, pdfs


def kaldi_stats(am, x, pdfs):
    accs = khg.AccumAmDiagGmm()
    accs.init(am, khg.GmmUpdateFlags.kGmmAll)
    like = sum(accs.accumulate_for_gmm(am, row, int(p), 1.0) for row, p in zip(x, pdfs))
    return accs, like


def numpy_stats(am, x, pdfs):
    stacked = gmm.stacked(am)
    tid_to_pdf = np.arange(am.num_pdfs, dtype=np.int32)            # identity: transition id = pdf here
    stats = GmmStats.zeros(len(stacked.weights), DIM, am.num_pdfs - 1)
    return stacked, accumulate(stacked, x, pdfs, tid_to_pdf, stats)


def test_statistics_equal_kaldis_per_frame_accumulation():
    am, x, pdfs = random_model(np.random.default_rng(0))
    accs, like = kaldi_stats(am, x, pdfs)
    stacked, stats = numpy_stats(am, x, pdfs)
    for p in range(am.num_pdfs):
        rows = slice(stacked.offsets[p], stacked.offsets[p + 1])
        acc = accs.get_acc(p)
        assert np.allclose(stats.occupancy[rows], acc.occupancy, rtol=1e-4, atol=1e-4)
        assert np.allclose(stats.sum_x[rows], acc.mean_accumulator, rtol=1e-4, atol=1e-3)
        assert np.allclose(stats.sum_x2[rows], acc.variance_accumulator, rtol=1e-4, atol=1e-3)
    assert stats.loglike == pytest.approx(like, rel=1e-5) and stats.frames == len(x)
    assert np.array_equal(stats.transitions, np.bincount(pdfs, minlength=am.num_pdfs))


@pytest.mark.parametrize("min_occ", [10.0, 60.0])
def test_mle_update_equals_kaldis_including_removed_gaussians(min_occ):
    am, x, pdfs = random_model(np.random.default_rng(1))
    accs, _ = kaldi_stats(am, x, pdfs)
    stacked, stats = numpy_stats(am, x, pdfs)
    new, _ = estimate(stacked, stats, UpdateOptions(min_gaussian_occupancy=min_occ))
    opts = khg.MleDiagGmmOptions()
    opts.min_gaussian_occupancy = min_occ
    khg.mle_am_diag_gmm_update(opts, accs, int(khg.GmmUpdateFlags.kGmmAll), am)
    ours = gmm.am_from_stacked(new)
    assert ours.num_gauss == am.num_gauss
    if min_occ == 60.0:
        assert am.num_gauss < len(stacked.weights)                  # some Gaussians were removed
    for p in range(am.num_pdfs):
        theirs, mine = am.get_pdf(p), ours.get_pdf(p)
        assert np.allclose(mine.weights, theirs.weights, atol=1e-5)
        assert np.allclose(mine.means_invvars, theirs.means_invvars, rtol=1e-3, atol=1e-3)
        assert np.allclose(mine.inv_vars, theirs.inv_vars, rtol=1e-3)
        assert np.allclose(mine.gconsts, theirs.gconsts, rtol=1e-4, atol=1e-3)


def test_split_targets_equal_kaldis_split_by_count():
    rng = np.random.default_rng(2)
    occs = np.array([0.0, 50.0, 900.0, 4000.0, 15.0, 300.0])
    am = gmm.make_am([gmm.make_gmm([1.0], rng.normal(size=(1, DIM)), np.ones((1, DIM))) for _ in occs])
    for target in (6, 20, 57):
        copy = gmm.make_am([am.get_pdf(p) for p in range(am.num_pdfs)])
        copy.split_by_count(occs.astype(np.float32), target, 0.01, 0.25, 20.0)
        ours = split_targets(occs, target, power=0.25, min_count=20.0)
        assert list(ours) == [copy.num_gauss_in_pdf(p) for p in range(len(occs))], target


def test_split_halves_the_heaviest_and_is_seeded():
    gmm_ = natural(gmm.stacked(gmm.make_am([gmm.make_gmm([0.7, 0.3], [[0.0] * DIM, [5.0] * DIM],
                                                           [[4.0] * DIM, [1.0] * DIM])])), 0)
    a = split_gmm(gmm_, 3, 0.01, np.random.default_rng(7))
    b = split_gmm(gmm_, 3, 0.01, np.random.default_rng(7))
    c = split_gmm(gmm_, 3, 0.01, np.random.default_rng(8))
    assert np.allclose(a.weights, [0.35, 0.3, 0.35])
    assert np.allclose((a.means[0] + a.means[2]) / 2, 0.0) and not np.allclose(a.means[0], a.means[2])
    assert np.all(np.abs(a.means[2]) <= 0.01 * 2.0 * 5)                  # perturb_factor * sqrt(var) * |randn|
    assert np.array_equal(a.means, b.means) and not np.array_equal(a.means, c.means)


def test_moments_and_subsets(tmp_path):
    rng = np.random.default_rng(3)
    chunks = [rng.normal(size=(n, 3)) for n in (5, 9, 2)]
    mean, var = moments(chunks).mean_var()
    everything = np.concatenate(chunks)
    assert np.allclose(mean, everything.mean(0)) and np.allclose(var, everything.var(0))
    lengths = {"a": 9, "b": 3, "c": 5, "d": 3, "e": 7}
    feats = write_store(tmp_path / "s", [(u, rng.normal(size=(n, 2))) for u, n in sorted(lengths.items())], {})
    texts = {u: "X" for u in "abcde"}
    assert list(subset(texts, feats, 3, "shortest")) == ["b", "c", "d"]
    assert list(subset(texts, feats, 2, "spread")) == ["a", "c"]
    assert subset(texts, feats, 0, "shortest") == texts and subset(texts, feats, 9, "spread") == texts


# ---------------------------------------------------------------- whole training runs

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("gmm_em")
    lang = make_lang(root)
    feats, texts, _ = make_corpus(root)
    mono = train_mono(feats, texts, lang, root / "mono", MONO)
    align_data(feats, texts, lang, mono, root / "mono_ali")
    tri = train_tri(feats, texts, lang, root / "mono_ali", root / "tri1", TRI)
    return root, lang, feats, texts, sha(mono / "final.mdl"), sha(tri / "final.mdl")


def test_train_twice_gives_the_same_bytes(corpus, tmp_path):
    root, lang, feats, texts, mono_sha, tri_sha = corpus
    assert sha(train_mono(feats, texts, lang, tmp_path / "mono", MONO) / "final.mdl") == mono_sha
    assert sha(train_tri(feats, texts, lang, root / "mono_ali", tmp_path / "tri1", TRI) / "final.mdl") == tri_sha
    other_seed = train_mono(feats, texts, lang, tmp_path / "mono_seed1", dataclasses.replace(MONO, seed=1))
    assert sha(other_seed / "final.mdl") != mono_sha                  # the seed is what mixing up draws from


def test_nj_4_gives_the_same_bytes_as_nj_1(corpus, tmp_path):
    root, lang, feats, texts, mono_sha, tri_sha = corpus
    assert sha(train_mono(feats, texts, lang, tmp_path / "mono", MONO, Jobs(nj=4)) / "final.mdl") == mono_sha
    assert sha(train_tri(feats, texts, lang, root / "mono_ali", tmp_path / "tri1", TRI, Jobs(nj=4))
               / "final.mdl") == tri_sha
    one = align_data(feats, texts, lang, root / "tri1", tmp_path / "a1", TRI.align)
    four = align_data(feats, texts, lang, root / "tri1", tmp_path / "a4", TRI.align, jobs=Jobs(nj=4))
    assert sha(tmp_path / "a1" / "data.bin") == sha(tmp_path / "a4" / "data.bin") and one.keys == four.keys


def test_dask_local_cluster_gives_the_same_bytes(corpus, tmp_path):
    distributed = pytest.importorskip("distributed")
    root, lang, feats, texts, mono_sha, _ = corpus
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        jobs = Jobs(nj=2, dask_scheduler=cluster.scheduler_address)
        out = train_mono(feats, texts, lang, tmp_path / "mono", MONO, jobs)
    assert sha(out / "final.mdl") == mono_sha


def test_resumed_run_ends_with_the_same_bytes(corpus, tmp_path):
    root, lang, feats, texts, mono_sha, tri_sha = corpus
    # killed after pass 6 of mono (a realignment pass) and pass 4 of tri1 (after its last realignment)
    for name, first_lost in (("mono", 7), ("tri1", 5)):
        shutil.copytree(root / name, tmp_path / name)
        for mdl in (tmp_path / name).glob("*.mdl"):
            if mdl.stem == "final" or int(mdl.stem) >= first_lost:
                mdl.unlink()
    assert sha(train_mono(feats, texts, lang, tmp_path / "mono", MONO) / "final.mdl") == mono_sha
    assert sha(train_tri(feats, texts, lang, root / "mono_ali", tmp_path / "tri1", TRI) / "final.mdl") == tri_sha

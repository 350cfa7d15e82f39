"""tri2 (LDA+MLLT) and tri3 (SAT, fMLLR) on a synthetic corpus whose speakers distort the features
by known affine maps: reproducible across --nj, and speaker adaptation undoes the distortion."""
import json
import shutil

import numpy as np
import pytest

from align_synth import boundary_errors, hyp_segments, make_corpus, make_lang
from asr_kd.align.alignment import AlignConfig, align_data
from asr_kd.align.lda_mllt import LdaMlltConfig, train_lda_mllt
from asr_kd.align.mono import MonoConfig, train_mono
from asr_kd.align.sat import SatConfig, adapt_set, load_transforms, train_sat
from asr_kd.align.tri import TriConfig, train_tri
from asr_kd.data.datadir import write_table
from asr_kd.data.feature_view import model_view, open_feats
from asr_kd.data.store import write_store
from asr_kd.parallel import Jobs

ALIGN = AlignConfig(shard_size=15)
TRI = dict(num_leaves=30, tot_gauss=60, num_iters=6, max_iter_inc=4, realign_iters=[3], min_leaf_count=20, align=ALIGN)
LDA = LdaMlltConfig(**TRI, lda_dim=10, splice=1, columns=6, mllt_iters=[2, 4])
SAT = SatConfig(**TRI, fmllr_iters=[2, 4])
NUM_SPEAKERS = 4


def speaker_of(utt: str) -> str:
    return f"spk{int(utt[3:]) % NUM_SPEAKERS}"


def distort(root, feats, seed=7):
    """Each speaker's features through its own affine map (the answer fMLLR should undo)."""
    rng = np.random.default_rng(seed)
    maps = {f"spk{s}": (np.eye(6) + 0.25 * rng.normal(size=(6, 6)), rng.normal(scale=0.8, size=6))
            for s in range(NUM_SPEAKERS)}
    items = [(u, (np.asarray(feats[u]) @ maps[speaker_of(u)][0].T + maps[speaker_of(u)][1]).astype(np.float32))
             for u in feats.keys]
    return write_store(root / "feats_spk", items, {"frame_shift_ms": 10.0, "config_hash": "synthetic-spk", "dim": 6})


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    root = tmp_path_factory.mktemp("sat")
    lang = make_lang(root)
    clean, texts, truth = make_corpus(root, num_utts=60)
    feats = distort(root, clean)
    write_table(root / "data" / "text", texts)
    write_table(root / "data" / "utt2spk", {u: speaker_of(u) for u in texts})
    train_mono(feats, texts, lang, root / "mono", MonoConfig(num_iters=10, max_iter_inc=6, tot_gauss=20,
                                                             realign_iters=[1, 2, 3, 4, 5, 6, 8], align=ALIGN))
    align_data(feats, texts, lang, root / "mono", root / "mono_ali")
    train_tri(feats, texts, lang, root / "mono_ali", root / "tri1", TriConfig(**TRI))
    align_data(feats, texts, lang, root / "tri1", root / "tri1_ali")
    for nj in (1, 2):
        train_lda_mllt(feats.path, texts, lang, root / "tri1_ali", root / f"tri2_nj{nj}", LDA, Jobs(nj))
    view = model_view(root / "tri2_nj1", feats.path, root / "tri2_feats")
    align_data(view, texts, lang, root / "tri2_nj1", root / "tri2_ali")
    for nj in (1, 2):
        train_sat(feats.path, root / "data", lang, root / "tri2_ali", root / f"tri3_nj{nj}", SAT, Jobs(nj))
    return root, lang, texts, truth, feats


def metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tri2_and_tri3_are_byte_identical_across_nj(systems):
    root = systems[0]
    for system in ("tri2", "tri3"):
        for name in ("final.mdl", "tree", "final.mat.npy"):
            assert (root / f"{system}_nj1" / name).read_bytes() == (root / f"{system}_nj2" / name).read_bytes(), name
    assert (root / "tri3_nj1/si/final.mdl").read_bytes() == (root / "tri3_nj2/si/final.mdl").read_bytes()
    for x in (0, 2, 4):
        a, b = load_transforms(root / f"tri3_nj1/trans.{x}.npz"), load_transforms(root / f"tri3_nj2/trans.{x}.npz")
        assert sorted(a) == sorted(b) and all((a[s] == b[s]).all() for s in a)


def test_tri2_lda_and_mllt_passes_are_logged_and_gain(systems):
    rows = metrics(systems[0] / "tri2_nj1" / "metrics.jsonl")
    lda = [r for r in rows if "lda_eigenvalues" in r]
    assert len(lda) == 1 and len(lda[0]["lda_eigenvalues"]) == LDA.lda_dim
    mllt = [r for r in rows if "mllt_impr_per_frame" in r]
    assert [r["pass"] for r in mllt] == LDA.mllt_iters and all(r["mllt_impr_per_frame"] > 0 for r in mllt)
    assert np.load(systems[0] / "tri2_nj1" / "final.mat.npy").shape == (LDA.lda_dim, 18)


def test_sat_adapts_every_speaker_and_aligns_at_known_boundaries(systems):
    root, lang, texts, truth, feats = systems
    rows = metrics(root / "tri3_nj1" / "metrics.jsonl")
    fmllr = [r for r in rows if "fmllr_impr_per_frame" in r]
    assert [r["pass"] for r in fmllr] == [0, *SAT.fmllr_iters]
    assert fmllr[0]["fmllr_impr_per_frame"] > 0.1 and fmllr[0]["fmllr_speakers"] == NUM_SPEAKERS
    summary = adapt_set(root / "tri3_nj1", feats.path, texts, {u: speaker_of(u) for u in texts}, lang,
                        root / "tri3_feats", align=ALIGN)
    assert summary["speakers"] == NUM_SPEAKERS and not summary["unadapted"] and summary["impr_per_frame"] > 0
    align_data(open_feats(root / "tri3_feats"), texts, lang, root / "tri3_nj1", root / "tri3_ali")
    errors = {name: boundary_errors(truth, hyp_segments(root / f"{name}_ali" / "ctm.txt"))
              for name in ("tri1", "tri2", "tri3")}
    # speaker distortion blurs the unadapted systems' boundaries (measured: mean 1.06 / 0.96 frames,
    # max 17 / 16); adapted, tri3 recovers them (0.60, max 5)
    assert errors["tri3"].mean() < 0.75 and errors["tri3"].mean() < min(errors["tri1"].mean(), errors["tri2"].mean())
    assert errors["tri3"].max() < min(errors["tri1"].max(), errors["tri2"].max())
    adapted = json.loads((root / "tri3_ali" / "stats.json").read_text())
    assert adapted["num_failed"] == 0


def test_sat_refuses_an_alignment_without_a_transform(systems, tmp_path):
    from asr_kd.errors import AsrKdError
    root, lang, texts, truth, feats = systems
    with pytest.raises(AsrKdError, match="LDA\\+MLLT"):
        train_sat(feats.path, root / "data", lang, root / "tri1_ali", tmp_path / "tri3", SAT)


def test_tri2_resumes_after_a_kill_to_the_same_model(systems, tmp_path):
    root, lang, texts, _, feats = systems
    out = tmp_path / "tri2"
    shutil.copytree(root / "tri2_nj1", out)
    for x in range(4, LDA.num_iters + 1):                       # as if killed during pass 4 (an MLLT pass)
        (out / f"{x}.mdl").unlink()
    for name in ("final.mdl", "4.mat.npy"):
        (out / name).unlink()
    train_lda_mllt(feats.path, texts, lang, root / "tri1_ali", out, LDA)
    assert (out / "final.mdl").read_bytes() == (root / "tri2_nj1" / "final.mdl").read_bytes()
    assert (out / "final.mat.npy").read_bytes() == (root / "tri2_nj1" / "final.mat.npy").read_bytes()

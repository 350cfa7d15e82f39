"""Teacher combination math, and the teacher cache: round trips (full, top-k), refusal of mismatches,
block-wise writing from a memory-mapped store (same bytes, atomic after a kill, disk space check)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from asr_kd.data.store import RaggedStore, write_store
from asr_kd.distill import cache as cache_mod
from asr_kd.distill.cache import CachedTeacher, cache_bytes, choose_top_k, write_cache
from asr_kd.distill.teachers import OnlineTeacher, TeacherSpec, member_targets
from asr_kd.errors import AsrKdError
from asr_kd.nnet.frames import FrameBatch, FrameData
from asr_kd.nnet.models import ModelConfig
from asr_kd.nnet.train import ModelSpec, init_model, save_final
from asr_kd.parallel import Jobs

LN3 = math.log(3.0)
MEMBERS = torch.tensor([[[0.0, 0.0]], [[LN3, 0.0]]])  # K=2 members, 1 frame, 2 classes: p = (.5,.5), (.75,.25)


def combine_arith(member_logits, t):
    return member_targets(member_logits, "arith", t, torch.tensor([0])).probs_at(t)


def combine_geo(member_logits, t):
    return member_targets(member_logits, "geo", t, torch.tensor([0])).probs_at(t)


def test_arith_and_geo_hand_values():
    torch.testing.assert_close(combine_arith(MEMBERS, 1.0), torch.tensor([[0.625, 0.375]]))
    s3 = math.sqrt(3)
    torch.testing.assert_close(combine_geo(MEMBERS, 1.0), torch.tensor([[s3 / (s3 + 1), 1 / (s3 + 1)]]))
    # T = 2: arith = mean(.5, 3^.5/(3^.5+1)); geo = softmax(mean logits / 2) = 3^.25/(3^.25+1)
    a = (0.5 + s3 / (s3 + 1)) / 2
    g = 3**0.25 / (3**0.25 + 1)
    torch.testing.assert_close(combine_arith(MEMBERS, 2.0), torch.tensor([[a, 1 - a]]))
    torch.testing.assert_close(combine_geo(MEMBERS, 2.0), torch.tensor([[g, 1 - g]]))


def test_geo_targets_retemper_and_arith_carries_probs():
    labels = torch.tensor([0])
    geo = member_targets(MEMBERS, "geo", 5.0, labels)
    assert geo.probs is None
    for t in (1.0, 2.0, 10.0):
        torch.testing.assert_close(geo.probs_at(t), combine_geo(MEMBERS, t))
    arith = member_targets(MEMBERS, "arith", 2.0, labels)
    torch.testing.assert_close(arith.probs_at(2.0), combine_arith(MEMBERS, 2.0))
    torch.testing.assert_close(arith.logits, MEMBERS.mean(0))  # high-T limit target of logit_mse


# ------------------------------------------------------------------------------ cache fixtures

NUM_PDFS, DIM, LEFT, RIGHT = 6, 3, 1, 1


def make_data(lengths=(5, 3, 7), seed=0) -> FrameData:
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    feats = torch.randn(n, DIM, generator=g)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]))
    utts = [f"utt{i}" for i in range(len(lengths))]
    return FrameData(feats, offsets, utts, torch.randint(0, NUM_PDFS, (n,), generator=g), NUM_PDFS)


def make_teacher(tmp_path, combination="arith", seeds=(1, 2)) -> OnlineTeacher:
    """Real final.pt members (K = len(seeds)), with peaky outputs so top-k truncation matters."""
    spec = ModelSpec(ModelConfig(hidden_layers=1, hidden_dim=8), DIM, LEFT, RIGHT, NUM_PDFS)
    dirs = []
    for s in seeds:
        model = init_model(spec, s)
        model[-1].weight.data.mul_(4.0)
        dirs.append(tmp_path / f"member_seed{s}")
        save_final(dirs[-1] / "final.pt", model.state_dict(), spec)
    return OnlineTeacher.load(dirs, combination)


def all_frames(data: FrameData) -> FrameBatch:
    idx = torch.arange(data.num_frames)
    return data.batch(idx, LEFT, RIGHT)


def test_cache_full_roundtrip_matches_online(tmp_path):
    data = make_data()
    for combination, t in (("arith", 2.0), ("geo", None)):
        teacher = make_teacher(tmp_path, combination)
        write_cache(tmp_path / combination, teacher, data, temperature=t, feature_config_hash="f1")
        cached = CachedTeacher(tmp_path / combination, temperature=t, spec=teacher.spec,
                               feature_config_hash="f1").attach(data)
        # a shuffled batch, to check lookup goes by frame index, not by position
        batch = data.batch(torch.randperm(data.num_frames, generator=torch.Generator().manual_seed(0)), LEFT, RIGHT)
        for temp in ([2.0] if combination == "arith" else [1.0, 2.0, 5.0]):  # geo: any T from one cache
            torch.testing.assert_close(cached.targets(batch, temp).probs_at(temp),
                                       teacher.attach(data).targets(batch, temp).probs_at(temp), atol=2e-3, rtol=0)


def test_cache_topk_renormalised(tmp_path):
    data = make_data()
    teacher = make_teacher(tmp_path, "arith")
    report = write_cache(tmp_path / "c", teacher, data, temperature=1.0, feature_config_hash="f1", top_k=2)
    assert report.num_frames == data.num_frames and 0 < report.kept_mass_mean < 1
    assert report.bytes == data.num_frames * 2 * (2 + 2)  # 2 fp16 values + 2 int16 ids per frame
    assert report.full_fp16_bytes == data.num_frames * NUM_PDFS * 2
    cached = CachedTeacher(tmp_path / "c", temperature=1.0).attach(data)
    batch = all_frames(data)
    p = cached.targets(batch, 1.0).probs_at(1.0)
    torch.testing.assert_close(p.sum(-1), torch.ones(data.num_frames))
    assert ((p > 0).sum(-1) <= 2).all()
    full = teacher.attach(data).targets(batch, 1.0).probs
    top_vals, top_idx = full.topk(2, -1)
    torch.testing.assert_close(p.gather(-1, top_idx), top_vals / top_vals.sum(-1, keepdim=True), atol=2e-3, rtol=0)
    # reported KL(top-k || full) is the mean of -log(kept mass)
    mass = top_vals.sum(-1).double()
    assert report.kl_topk_full_mean == pytest.approx(-mass.log().mean().item(), rel=1e-4)
    assert report.kept_mass_mean == pytest.approx(mass.mean().item(), rel=1e-4)


def test_cache_topk_geo_any_temperature(tmp_path):
    data = make_data()
    teacher = make_teacher(tmp_path, "geo")
    write_cache(tmp_path / "c", teacher, data, temperature=None, feature_config_hash="f1", top_k=3)
    cached = CachedTeacher(tmp_path / "c", temperature=7.0).attach(data)
    batch = all_frames(data)
    for t in (1.0, 7.0):
        p = cached.targets(batch, t).probs_at(t)
        torch.testing.assert_close(p.sum(-1), torch.ones(data.num_frames))
        assert ((p > 0).sum(-1) == 3).all()


def test_cache_refuses_mismatch(tmp_path):
    data = make_data()
    teacher = make_teacher(tmp_path, "arith")
    write_cache(tmp_path / "c", teacher, data, temperature=2.0, feature_config_hash="f1")
    with pytest.raises(AsrKdError, match=r"meta.json.*temperature: .*T=2.*asks T=5"):
        CachedTeacher(tmp_path / "c", temperature=5.0)
    other = make_teacher(tmp_path, "arith", seeds=(1, 3))
    with pytest.raises(AsrKdError, match="teacher: member weight checksums differ"):
        CachedTeacher(tmp_path / "c", spec=other.spec)
    with pytest.raises(AsrKdError, match="combination: cache 'arith', requested 'geo'"):
        CachedTeacher(tmp_path / "c", spec=TeacherSpec(teacher.spec.sha256, "geo"))
    with pytest.raises(AsrKdError, match=r"features: cache made from feature config f1 \(data\), transfer set has f2 "
                                         r"\(feats/mfcc\)"):
        CachedTeacher(tmp_path / "c", feature_config_hash="f2", feature_store="feats/mfcc")
    cached = CachedTeacher(tmp_path / "c", temperature=2.0, spec=teacher.spec, feature_config_hash="f1")
    with pytest.raises(AsrKdError, match=r"not in the cache, e.g. \['uttX'\]"):
        cached.attach(SimpleNamespace(utt_ids=["utt0", "uttX"], offsets=[0, 5, 8]))
    with pytest.raises(AsrKdError, match=r"'utt1' has 3 cached frames \(made from data\) but 4 feature frames in feats/x"):
        cached.attach(SimpleNamespace(utt_ids=["utt0", "utt1"], offsets=[0, 5, 9], name="feats/x"))
    # a subset of the cached set is fine (transfer set = part of the cached training set)
    sub = cached.attach(SimpleNamespace(utt_ids=["utt2"], offsets=[0, 7]))
    batch = FrameBatch(x=None, y=torch.full((7,), -1), frame_index=torch.arange(7), utt_index=torch.zeros(7))
    full = teacher.attach(data).targets(data.batch(data.utt_frames(2), LEFT, RIGHT), 2.0).probs
    torch.testing.assert_close(sub.targets(batch, 2.0).probs, full, atol=2e-3, rtol=0)


def test_logit_mse_needs_full_logits(tmp_path):
    from asr_kd.distill.losses import logit_mse

    data = make_data()
    teacher = make_teacher(tmp_path, "geo")
    batch = all_frames(data)
    z = torch.zeros(data.num_frames, NUM_PDFS)
    write_cache(tmp_path / "full", teacher, data, temperature=None, feature_config_hash="f1")
    full = CachedTeacher(tmp_path / "full").attach(data).targets(batch, 1.0)
    online = teacher.attach(data).targets(batch, 1.0)
    assert logit_mse(z, full, 1.0).item() == pytest.approx(logit_mse(z, online, 1.0).item(), rel=1e-3)
    write_cache(tmp_path / "topk", teacher, data, temperature=None, feature_config_hash="f1", top_k=2)
    with pytest.raises(AsrKdError, match="logit_mse needs full teacher logits"):
        logit_mse(z, CachedTeacher(tmp_path / "topk").attach(data).targets(batch, 1.0), 1.0)


def make_store(tmp_path, data: FrameData) -> RaggedStore:
    offsets = data.offsets.numpy()
    items = [(u, data.feats[offsets[i]:offsets[i + 1]].numpy()) for i, u in enumerate(data.utt_ids)]
    return write_store(tmp_path / "feats", items, {"config_hash": "f1"}, dtype="float32")


def cache_bytes_on_disk(path) -> dict:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("top_k", [None, 2])
def test_cache_from_store_by_blocks_same_bytes_as_whole_set(tmp_path, top_k):
    """Blocks of a few utterances from the memory-mapped store (one longer than a block) give the
    bytes a single pass over the resident set gives, and a re-run gives them again."""
    data = make_data(lengths=(5, 3, 7, 1, 12, 4))
    store = make_store(tmp_path, data)
    teacher = make_teacher(tmp_path, "arith")
    kw = dict(temperature=2.0, feature_config_hash="f1", top_k=top_k)
    whole = write_cache(tmp_path / "whole", teacher, data, **kw)
    blocked = write_cache(tmp_path / "blocked", teacher, store, block_frames=9, batch_frames=4, **kw)
    write_cache(tmp_path / "again", teacher, store, block_frames=9, batch_frames=4, **kw)
    for name in ("values/data.bin", "values/offsets.npy", "values/keys.txt", "indices/data.bin"):
        if top_k or not name.startswith("indices"):
            assert (tmp_path / "blocked" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    a = np.fromfile(tmp_path / "whole/values/data.bin", np.float16)
    b = np.fromfile(tmp_path / "blocked/values/data.bin", np.float16)
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-3)  # batch sizes differ
    assert blocked.num_frames == data.num_frames and blocked.bytes == cache_bytes(data.num_frames, NUM_PDFS, top_k)
    assert blocked.kept_mass_mean == (pytest.approx(whole.kept_mass_mean, rel=1e-4) if top_k else None)


def test_cache_killed_midway_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    """A kill leaves no cache at the path; the same command computes only the missing blocks and
    publishes the bytes an uninterrupted run writes (nj = 2 processes too)."""
    data = make_data(lengths=(5, 3, 7, 1, 12, 4))
    store = make_store(tmp_path, data)
    teacher = make_teacher(tmp_path, "geo")
    kw = dict(temperature=None, feature_config_hash="f1", top_k=3, block_frames=9, batch_frames=4)
    clean = write_cache(tmp_path / "clean", teacher, store, **kw)
    real, computed = cache_mod._block_targets, []

    def dies_on_third_block(teacher, block, job):
        if len(computed) == 2:
            raise KeyboardInterrupt  # the process "dies" after two blocks were written
        computed.append(block.utt_ids)
        return real(teacher, block, job)

    monkeypatch.setattr(cache_mod, "_block_targets", dies_on_third_block)
    with pytest.raises(KeyboardInterrupt):
        write_cache(tmp_path / "c", teacher, store, **kw)
    assert not (tmp_path / "c").exists() and len(list((tmp_path / ".c.partial" / "done").iterdir())) == 2
    computed.clear()
    monkeypatch.setattr(cache_mod, "_block_targets", lambda *a: (computed.append(a[1].utt_ids), real(*a))[1])
    resumed = write_cache(tmp_path / "c", teacher, store, **kw)
    assert computed == [["utt4"], ["utt5"]]  # blocks (utt0, utt1) (utt2, utt3) were done: (utt4) (utt5) remain
    assert cache_bytes_on_disk(tmp_path / "c") == cache_bytes_on_disk(tmp_path / "clean")
    assert resumed == clean and not (tmp_path / ".c.partial").exists()
    # a partial dir of another plan (here: another k) is discarded, not mixed in
    (tmp_path / ".d.partial" / "done").mkdir(parents=True)
    (tmp_path / ".d.partial" / "plan.json").write_text("{}")
    write_cache(tmp_path / "d", teacher, store, **{**kw, "top_k": 3})
    assert cache_bytes_on_disk(tmp_path / "d") == cache_bytes_on_disk(tmp_path / "clean")
    monkeypatch.setattr(cache_mod, "_block_targets", real)
    write_cache(tmp_path / "nj2", teacher, store, jobs=Jobs(nj=2), **kw)
    assert cache_bytes_on_disk(tmp_path / "nj2") == cache_bytes_on_disk(tmp_path / "clean")


def test_cache_refuses_when_disk_is_short(tmp_path, monkeypatch):
    data = make_data()
    teacher = make_teacher(tmp_path, "arith")
    need = cache_bytes(data.num_frames, NUM_PDFS, None)
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=0, free=need - 1))
    with pytest.raises(AsrKdError, match=rf"out/c: the cache needs 0.00 GB more but .*out has 0.00 GB free.*--top-k"):
        write_cache(tmp_path / "out" / "c", teacher, data, temperature=1.0, feature_config_hash="f1")
    assert not list((tmp_path / "out").iterdir())  # nothing written, not even the work dir
    write_cache(tmp_path / "out" / "c", teacher, data, temperature=1.0, feature_config_hash="f1", top_k=2)  # fits
    assert (tmp_path / "out" / "c" / "meta.json").is_file()


def test_choose_top_k_full_while_it_fits_the_budget():
    full = cache_bytes(1000, 500, None)
    assert full == 1000 * 500 * 2 and cache_bytes(1000, 500, 20) == 1000 * 20 * 4
    assert cache_bytes(1000, 40000, 20) == 1000 * 20 * 6  # int32 ids past 32767 pdfs
    assert choose_top_k(1000, 500, None, full) is None
    assert choose_top_k(1000, 500, None, full - 1) == cache_mod.DEFAULT_TOP_K
    assert choose_top_k(1000, 500, 50, 10**12) == 50      # an explicit k wins
    assert choose_top_k(1000, 500, 0, 1) is None          # 0 = full, whatever the budget


def test_cached_teacher_reads_rows_per_batch_from_the_memmap(tmp_path):
    """O(utterances) state after attach; a batch of global ids of a later chunk maps to the right rows."""
    data = make_data(lengths=(5, 3, 7, 1, 12, 4))
    teacher = make_teacher(tmp_path, "geo")
    write_cache(tmp_path / "c", teacher, data, temperature=None, feature_config_hash="f1", top_k=3)
    cached = CachedTeacher(tmp_path / "c").attach(data)
    assert isinstance(cached.values.data, np.memmap) and isinstance(cached.indices.data, np.memmap)
    assert cached._cache_start.shape == (6,)
    assert not [k for k, v in vars(cached).items() if isinstance(v, (torch.Tensor, np.ndarray)) and v.size != 6
                and len(v) >= data.num_frames]
    # frames of utterances 4 and 2 only (as a streamed chunk holds them), global ids, shuffled
    frames = torch.cat([data.utt_frames(4), data.utt_frames(2)])[torch.randperm(19, generator=torch.Generator().manual_seed(1))]
    batch = data.batch(frames, LEFT, RIGHT)
    expected = CachedTeacher(tmp_path / "c").attach(data).targets(all_frames(data), 2.0).probs_at(2.0)[frames]
    torch.testing.assert_close(cached.targets(batch, 2.0).probs_at(2.0), expected)
    online = teacher.attach(data).targets(batch, 2.0).logits
    top = online.topk(3, -1).indices
    assert (cached.targets(batch, 2.0).logits.gather(-1, top) > float("-inf")).all()

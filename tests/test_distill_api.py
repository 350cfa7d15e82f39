"""distill() end to end on a tiny synthetic problem whose labels ARE the teacher's decisions.

Checks: the cached path trains the same student as the online path; a student distilled from
unlabelled transfer data (hard term off) still learns the teacher's function; exp-dir records.
"""
import json

import pytest
import torch

from asr_kd.distill.cache import CachedTeacher, write_cache
from asr_kd.distill.distill import distill, drop_labels, make_loss_fn, transfer_subset
from asr_kd.distill.losses import LossConfig
from asr_kd.distill.teachers import OnlineTeacher
from asr_kd.errors import AsrKdError
from asr_kd.nnet.frames import FrameBatch, FrameData
from asr_kd.nnet.infer import evaluate
from asr_kd.nnet.models import ModelConfig
from asr_kd.nnet.train import ModelSpec, TrainConfig, init_model, save_final

NUM_PDFS, DIM = 5, 4


def synthetic(num_utts, seed, teacher=None) -> FrameData:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, 40, (num_utts,), generator=g)
    feats = torch.randn(int(lengths.sum()), DIM, generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    data = FrameData(feats, offsets, [f"s{seed}_u{i:03d}" for i in range(num_utts)], None, NUM_PDFS)
    if teacher is not None:  # label every frame with the teacher's decision
        idx = torch.arange(data.num_frames)
        data.labels = teacher.member_logits(data, idx).mean(0).argmax(-1)
    return data


def teacher_dirs(root):
    """Two saved teacher models; they read a wider window (2+1+2) than the students (1+1+1)."""
    spec = ModelSpec(ModelConfig(hidden_layers=1, hidden_dim=16), DIM, 2, 2, NUM_PDFS)
    dirs = []
    for seed in (1, 2):
        model = init_model(spec, seed)
        model[-1].weight.data.mul_(3.0)
        dirs.append(root / f"teacher_{seed}")
        save_final(dirs[-1] / "final.pt", model.state_dict(), spec)
    return dirs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    dirs = teacher_dirs(root)
    teacher = OnlineTeacher.load(dirs, "geo")
    train, dev = synthetic(40, 0, teacher), synthetic(10, 1, teacher)
    return root, dirs, train, dev


def student_cfg(**kw):
    base = dict(model=ModelConfig(hidden_layers=1, hidden_dim=32), left_context=1, right_context=1,
                optimizer="adamw", lr=0.01, batch_size=64, max_epochs=3, schedule="cosine", seed=3, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_cached_teacher_trains_same_student_as_online(setup):
    root, dirs, train, dev = setup
    loss = LossConfig(terms={"soft_ce": 1.0, "hard_ce": 0.5}, temperature=2.0)
    online = distill(student_cfg(), OnlineTeacher.load(dirs, "geo"), train, loss, dev=dev, exp_dir=root / "online")
    write_cache(root / "cache", OnlineTeacher.load(dirs, "geo").attach(train), train, temperature=None,
                feature_config_hash="synthetic")
    cached_teacher = CachedTeacher(root / "cache", temperature=2.0, spec=OnlineTeacher.load(dirs, "geo").spec)
    cached = distill(student_cfg(), cached_teacher, train, loss, dev=dev, exp_dir=root / "cached")
    # the cache holds fp16 logits, so targets differ by ~1e-3 relative; after 3 epochs the students'
    # dev logits agree to within 1e-3 (measured: 4e-5) and their dev accuracy to within one frame
    x = dev.windows(torch.arange(dev.num_frames), 1, 1)
    with torch.no_grad():
        diff = (online.model(x) - cached.model(x)).abs().max().item()
    acc_online, acc_cached = evaluate((online.model, online.spec), dev)["frame_acc"], evaluate((cached.model, cached.spec), dev)["frame_acc"]
    assert diff < 1e-3, diff
    assert abs(acc_online - acc_cached) <= 1.0 / dev.num_frames
    assert acc_online > 0.6  # learnt the teacher's function (chance is ~0.2)
    record = json.loads((root / "cached" / "distill.json").read_text())
    assert record["teacher"]["combination"] == "geo" and record["loss"]["temperature"] == 2.0


def test_unlabelled_transfer_switches_hard_term_off(setup):
    root, dirs, train, dev = setup
    unlabelled = drop_labels(train)
    loss = LossConfig(terms={"soft_ce": 1.0, "hard_ce": 0.5}, temperature=1.0)
    result = distill(student_cfg(), OnlineTeacher.load(dirs, "arith"), unlabelled, loss, dev=dev,
                     exp_dir=root / "unlabelled")
    metrics = [json.loads(ln) for ln in (root / "unlabelled" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["train_loss_hard_ce"] == 0.0 and m["train_labelled_fraction"] == 0.0 for m in metrics)
    assert all(m["train_loss_soft_ce"] > 0 for m in metrics)
    assert evaluate((result.model, result.spec), dev)["frame_acc"] > 0.6
    # resuming the same exp dir with another loss is refused
    with pytest.raises(AsrKdError, match="distill.json.*different loss"):
        distill(student_cfg(), OnlineTeacher.load(dirs, "arith"), unlabelled, LossConfig(temperature=5.0),
                dev=dev, exp_dir=root / "unlabelled")


def test_loss_fn_on_unlabelled_batch_has_no_hard_gradient(setup):
    _, dirs, train, _ = setup
    teacher = OnlineTeacher.load(dirs, "arith").attach(train)
    idx = torch.arange(16)
    batch = FrameBatch(train.windows(idx, 1, 1), torch.full((16,), -1), idx, train.utt_of_frame[idx])
    logits = torch.randn(16, NUM_PDFS, requires_grad=True)
    loss, metrics = make_loss_fn(teacher, LossConfig(terms={"hard_ce": 1.0}))(logits, batch)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0) and metrics["labelled_fraction"] == 0
    with pytest.raises(AsrKdError, match="need a teacher"):
        make_loss_fn(None, LossConfig())


def test_transfer_subset_keeps_whole_utterances(setup):
    _, _, train, _ = setup
    sub = transfer_subset(train, 0.1, seed=0)
    assert len(sub.utt_ids) == 4 and sub.utt_ids == sorted(sub.utt_ids)
    for u, utt in enumerate(sub.utt_ids):
        src = train.utt_ids.index(utt)
        torch.testing.assert_close(sub.feats[sub.utt_frames(u)], train.feats[train.utt_frames(src)])
        assert torch.equal(sub.labels[sub.utt_frames(u)], train.labels[train.utt_frames(src)])
    assert transfer_subset(train, 0.1, seed=0).utt_ids == sub.utt_ids  # seeded
    assert len(transfer_subset(train, 0.001).utt_ids) == 1
    with pytest.raises(AsrKdError, match="fraction"):
        transfer_subset(train, 0.0)


def test_teacher_of_another_tree_is_refused_naming_both(setup):
    """A transfer set aligned with another tree (pdf count) is refused; the message names set and teacher."""
    root, dirs, train, dev = setup
    other_tree = FrameData(train.feats, train.offsets, train.utt_ids, train.labels, NUM_PDFS + 2, name="feats/other")
    write_cache(root / "tree_cache", OnlineTeacher.load(dirs, "geo"), train, temperature=None, feature_config_hash="h")
    for teacher, origin in ((OnlineTeacher.load(dirs, "geo"), "teacher_1"), (CachedTeacher(root / "tree_cache"), "tree_cache")):
        with pytest.raises(AsrKdError, match=rf"feats/other: labels have 7 pdfs but the teacher .*{origin}.* predicts 5"):
            distill(student_cfg(), teacher, other_tree, LossConfig(), dev=dev, exp_dir=root / "tree")

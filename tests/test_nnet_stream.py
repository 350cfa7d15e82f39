"""Streamed frame data: the FrameData contract per chunk, chunk plans, resident-vs-streamed training,
kill -9 resume while streaming, the budget refusal, and one model data-parallel over 2 gloo ranks."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_kd.data.store import write_store
from asr_kd.errors import AsrKdError
from asr_kd.nnet.frames import FrameData
from asr_kd.nnet.stream import StreamedFrames, open_frames, pack, resolve_budget
from asr_kd.nnet.train import TrainConfig, hard_ce, read_metrics, train_frame_classifier
from nnet_resume_run import assert_same_weights, kill_9_after_epoch_2, launch
from nnet_synth import make_sets

HERE = Path(__file__).parent
BUDGET = 300  # frames: chunks of <= 150 frames


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_sets(root, num_utts=30, name="train", seed=0)  # ~700 frames: streamed in ~5 chunks
    make_sets(root, num_utts=8, name="dev", seed=1)
    return root


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    root = tmp_path_factory.mktemp("noisy")
    make_sets(root, num_utts=120, name="train", seed=0, noise=1.6)  # dev accuracy well below 100%
    make_sets(root, num_utts=40, name="dev", seed=1, noise=1.6)  # ~850 frames: 0.12-point resolution
    return root


def sets(root, budget):
    return (open_frames(root / "train_feats", root / "train_ali", budget=budget),
            open_frames(root / "dev_feats", root / "dev_ali", budget=budget))


def row_id_store(path, lengths):
    """Features whose value is the global row id (every dim), so a wrong gather cannot pass."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = [(f"u{i:02d}", np.repeat(np.arange(offsets[i], offsets[i + 1], dtype=np.float32)[:, None], 3, 1))
             for i in range(len(lengths))]
    labels = [(k, (v[:, 0] % 4).astype(np.int32)) for k, v in items]
    write_store(path / "f", items, dtype="float16")
    write_store(path / "a", labels[:-1], meta={"num_pdfs": 4}, dtype="int32")  # last utterance unaligned
    return path / "f", path / "a"


def test_streamed_chunks_serve_the_same_windows_labels_and_utterances(tmp_path):
    f, a = row_id_store(tmp_path, [5, 1, 9, 3, 7, 2, 6])
    resident = FrameData.load(f, a)
    streamed = open_frames(f, a, budget=20)
    assert isinstance(streamed, StreamedFrames) and streamed.chunk_frames == 10
    assert streamed.utt_ids == resident.utt_ids and torch.equal(streamed.offsets, resident.offsets)
    seen = []
    plan = streamed.epoch_plan(seed=3, epoch=2, labelled_only=False)
    for chunk in streamed.resident(plan):
        ids = chunk.frames
        assert len(ids) <= 10
        assert torch.equal(streamed.windows(ids, 2, 3), resident.windows(ids, 2, 3))
        assert torch.equal(streamed.labels_of(ids), resident.labels[ids])
        assert torch.equal(streamed.utt_of(ids), resident.utt_of_frame[ids])
        seen.append(ids)
    assert torch.equal(torch.sort(torch.cat(seen)).values, torch.arange(resident.num_frames))  # every frame once
    with pytest.raises(AsrKdError, match="no chunk is resident"):
        streamed.windows(torch.tensor([0]), 1, 1)
    mean_s, std_s = streamed.feature_stats()
    mean_r, std_r = resident.feature_stats()
    assert torch.allclose(mean_s, mean_r) and torch.allclose(std_s, std_r)
    assert streamed.num_labelled_frames() == resident.num_labelled_frames() == 33 - 6


def test_chunk_plan_depends_only_on_seed_and_epoch(tmp_path):
    f, a = row_id_store(tmp_path, [5, 1, 9, 3, 7, 2, 6])
    one, two = open_frames(f, a, budget=20), open_frames(f, a, budget=20)
    plan = one.epoch_plan(1, 1, labelled_only=True)
    assert [c.tolist() for c in plan] == [c.tolist() for c in two.epoch_plan(1, 1, labelled_only=True)]
    assert [c.tolist() for c in plan] != [c.tolist() for c in one.epoch_plan(1, 2, labelled_only=True)]
    assert sorted(np.concatenate(plan).tolist()) == [0, 1, 2, 3, 4, 5]  # the unaligned utterance is skipped
    assert [c.tolist() for c in pack(np.array([2, 0, 1]), np.array([4, 5, 4]), 9)] == [[2, 0], [1]]
    assert pack(np.array([], dtype=np.int64), np.array([4]), 9) == []


def test_over_budget_utterance_stops_naming_budget_and_set(tmp_path):
    f, a = row_id_store(tmp_path, [5, 30, 4])
    with pytest.raises(AsrKdError, match=r"'u01' has 30 frames.*resident budget of 20 frames.*max_resident_frames"):
        open_frames(f, a, budget=20)
    with pytest.raises(AsrKdError, match="expected a frame count, a size like '8GB' or 'auto'"):
        resolve_budget("lots", "cpu", 3)
    assert resolve_budget("1KiB", "cpu", 3) == 1024 // (4 * 3 + 16)
    assert resolve_budget("auto", "cpu", 40) & (resolve_budget("auto", "cpu", 40) - 1) == 0  # a power of two


def small_cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(**{"batch_size": 32, "lr": 0.05, "device": "cpu", **kw})
    cfg.model.hidden_dim = 32
    return cfg


def test_resident_and_streamed_training_reach_the_same_dev_accuracy(noisy, tmp_path):
    accs = {}
    for budget in ("auto", BUDGET):
        train, dev = sets(noisy, budget)
        assert train.streamed == (budget == BUDGET) and dev.streamed == (budget == BUDGET)
        accs[budget] = train_frame_classifier(small_cfg(max_epochs=6), train, dev,
                                              exp_dir=tmp_path / str(budget)).dev_frame_acc[0]
    assert 0.6 < accs["auto"] < 0.99                          # a task with errors left to make
    assert abs(accs["auto"] - accs[BUDGET]) <= 0.005, accs
    ckpt = torch.load(next((tmp_path / str(BUDGET) / "checkpoints").glob("*.pt")), weights_only=False)
    assert ckpt["layout"] == {"chunk_frames": BUDGET // 2}
    train, dev = sets(noisy, "auto")
    with pytest.raises(AsrKdError, match="layout .*chunk_frames.*data.max_resident_frames"):
        train_frame_classifier(small_cfg(max_epochs=6), train, dev, exp_dir=tmp_path / str(BUDGET))


def test_streamed_kill_9_then_resume_gives_identical_weights(synth, tmp_path):
    kill_9_after_epoch_2(synth, tmp_path / "killed", budget=BUDGET)
    assert launch(synth, tmp_path / "killed", budget=BUDGET).wait() == 0  # resumes after epoch 2
    assert launch(synth, tmp_path / "straight", budget=BUDGET).wait() == 0
    assert_same_weights(tmp_path / "killed", tmp_path / "straight")
    assert torch.load(tmp_path / "killed/checkpoints/epoch_4.pt", weights_only=False)["layout"] == {"chunk_frames": BUDGET // 2}
    assert "resumed after epoch 2" in (tmp_path / "killed/log/train.log").read_text()


@pytest.mark.parametrize("budget", ["auto", BUDGET])
def test_max_steps_per_epoch_caps_steps_frames_and_the_schedule(synth, tmp_path, budget):
    seen = []  # (step's frames) per loss call

    def counting_ce(logits, batch):
        seen.append(len(batch.y))
        time.sleep(0.05)  # an epoch of >= 0.15 s, so that metrics' rounded epoch_s is precise enough
        return hard_ce(logits[None], batch.y[None])

    train, dev = sets(synth, budget)
    assert train.num_frames > 10 * 32  # the cap is well short of a whole epoch
    cfg = small_cfg(max_epochs=2, max_steps_per_epoch=3, schedule="cosine")
    train_frame_classifier(cfg, train, dev, loss_fn=counting_ce, exp_dir=tmp_path / "capped")
    assert seen == [32] * 6  # 3 full batches per epoch, 2 epochs
    metrics = read_metrics(tmp_path / "capped")
    # cosine over the capped 2 x 3 steps: the last step (5 of 6) runs at this LR, not near cfg.lr
    f = cfg.cosine_final_fraction
    assert metrics[-1]["lr"] == pytest.approx(cfg.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * 5 / 6))))
    for m in metrics:  # frames_per_s counts the 96 frames trained, not the ~700 of the set (epoch_s is rounded)
        assert m["frames_per_s"] * m["epoch_s"] == pytest.approx(96, rel=0.25)
    with pytest.raises(AsrKdError, match="max_steps_per_epoch must be >= 0"):
        train_frame_classifier(small_cfg(max_steps_per_epoch=-1), train, dev, exp_dir=tmp_path / "bad")


def test_capped_streamed_kill_9_then_resume_gives_identical_weights(synth, tmp_path):
    kill_9_after_epoch_2(synth, tmp_path / "killed", budget=BUDGET, max_steps=4)
    assert launch(synth, tmp_path / "killed", budget=BUDGET, max_steps=4).wait() == 0
    assert launch(synth, tmp_path / "straight", budget=BUDGET, max_steps=4).wait() == 0
    assert_same_weights(tmp_path / "killed", tmp_path / "straight")
    assert [m["train_ce"] for m in read_metrics(tmp_path / "killed")] == \
        [m["train_ce"] for m in read_metrics(tmp_path / "straight")]
    assert "resumed after epoch 2" in (tmp_path / "killed/log/train.log").read_text()


@pytest.mark.parametrize("budget", ["auto", BUDGET])
def test_ddp_two_gloo_ranks_equal_one_process_with_the_same_global_batch(synth, tmp_path, budget):
    """`torchrun --nproc-per-node 2 -m asr_kd train` (README's multi-GPU command, on CPU)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    args = [str(synth / n) for n in ("train_feats", "train_ali", "dev_feats", "dev_ali")]
    sets_ = ["--set", "max_epochs=2", "--set", "model.hidden_dim=16", "--set", "batch_size=32", "--set", "device=cpu",
             "--set", f"data.max_resident_frames={budget}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "asr_kd", "train", *args,
                          str(tmp_path / "ddp"), *sets_], env=env, capture_output=True, text=True,
                         cwd=HERE.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.stdout.strip().splitlines()) == 1                   # rank 0 alone prints the result
    single = subprocess.run([sys.executable, "-m", "asr_kd", "train", *args, str(tmp_path / "one"), *sets_],
                            env=env, capture_output=True, text=True, cwd=HERE.parent)
    assert single.returncode == 0, single.stderr[-3000:]
    a = torch.load(tmp_path / "ddp/checkpoints/epoch_2.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "one/checkpoints/epoch_2.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    diffs = {k: float((a[k].float() - b[k].float()).abs().max()) for k in a}
    assert max(diffs.values()) <= 1e-5, diffs
    first = torch.load(tmp_path / "one/checkpoints/epoch_1.pt", weights_only=False)["model"]
    assert any(not torch.equal(a[k], first[k]) for k in a)              # the weights moved in epoch 2
    ddp_m, one_m = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "one")
    assert [m["epoch"] for m in ddp_m] == [1, 2]                       # one metrics writer (rank 0)
    assert [m["dev_frame_acc"] for m in ddp_m] == pytest.approx([m["dev_frame_acc"] for m in one_m], abs=1e-4)
    assert json.loads(run.stdout)["best_epoch"] == json.loads(single.stdout)["best_epoch"]


def test_loss_hook_batches_of_a_streamed_set_match_the_resident_set(synth, tmp_path):
    """The contract teachers rely on: global frame ids, windows and labels as a resident set gives them."""
    resident = FrameData.load(synth / "train_feats", synth / "train_ali")
    train, dev = sets(synth, BUDGET)
    seen = []

    def loss_fn(logits, batch):
        assert torch.equal(batch.x, resident.windows(batch.frame_index, 5, 5))
        assert torch.equal(batch.y, resident.labels[batch.frame_index])
        assert torch.equal(batch.utt_index, resident.utt_of_frame[batch.frame_index])
        seen.append(batch.frame_index)
        return torch.nn.functional.cross_entropy(logits, batch.y), {}

    train_frame_classifier(small_cfg(max_epochs=1), train, dev, loss_fn=loss_fn, exp_dir=tmp_path / "e")
    assert torch.equal(torch.sort(torch.cat(seen)).values, torch.arange(resident.num_frames))  # each frame once


def test_distill_from_an_online_teacher_on_a_streamed_unlabelled_subset(synth, tmp_path):
    from asr_kd.distill.distill import distill, drop_labels, transfer_subset
    from asr_kd.distill.losses import LossConfig
    from asr_kd.distill.teachers import OnlineTeacher
    from asr_kd.io import read_json

    train, dev = sets(synth, BUDGET)
    train_frame_classifier(small_cfg(max_epochs=2), train, dev, exp_dir=tmp_path / "teacher")
    transfer = drop_labels(transfer_subset(train, 0.5, seed=0))
    assert transfer.streamed and len(transfer.utt_ids) == 15 and transfer.num_labelled_frames() == 0
    result = distill(small_cfg(max_epochs=3), OnlineTeacher.load([tmp_path / "teacher"]), transfer,
                     LossConfig(terms={"soft_ce": 1.0}, temperature=2.0), dev=dev, exp_dir=tmp_path / "student")
    record = read_json(tmp_path / "student/distill.json")["transfer_set"]
    assert record["labelled_frames"] == 0 and record["num_utts"] == 15
    assert result.train.dev_frame_acc[0] > 0.8                          # learnt from the teacher alone


def test_ddp_distill_from_an_online_teacher_on_a_streamed_set_equals_one_process(synth, tmp_path):
    """`torchrun ... -m asr_kd distill`: one student data-parallel, targets from each rank's teacher."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    train, dev = sets(synth, "auto")
    train_frame_classifier(small_cfg(max_epochs=1), train, dev, exp_dir=tmp_path / "teacher")
    args = [str(synth / n) for n in ("train_feats", "train_ali", "dev_feats", "dev_ali")]
    opts = ["--teacher", str(tmp_path / "teacher"), "--set", "student.max_epochs=1", "--set", "student.device=cpu",
            "--set", "student.model.hidden_dim=16", "--set", "student.batch_size=32",
            "--set", f"student.data.max_resident_frames={BUDGET}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {"ddp": [str(torchrun), "--nproc-per-node", "2", "-m", "asr_kd"], "one": [sys.executable, "-m", "asr_kd"]}
    for name, launch in runs.items():
        run = subprocess.run([*launch, "distill", *args, str(tmp_path / name), *opts], env=env, capture_output=True,
                             text=True, cwd=HERE.parent)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "streaming in chunks" in run.stderr
    a = torch.load(tmp_path / "ddp/final.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "one/final.pt", weights_only=False)["state_dict"]
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-5

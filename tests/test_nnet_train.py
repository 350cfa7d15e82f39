"""Trainer: learns separable data, the loss hook, NaN errors, newbob, exp dir, kill -9 resume equality."""
import pytest
import torch

from asr_kd.errors import AsrKdError
from asr_kd.nnet.frames import FrameData
from asr_kd.nnet.models import ModelConfig, build_model, load_model
from asr_kd.nnet.train import LRSchedule, TrainConfig, hard_ce, read_metrics, train_frame_classifier
from nnet_resume_run import assert_same_weights, kill_9_after_epoch_2, launch, resume_config
from nnet_synth import make_sets


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_sets(root, num_utts=30, name="train", seed=0)
    make_sets(root, num_utts=8, name="dev", seed=1)
    return root


def load(root):
    return (FrameData.load(root / "train_feats", root / "train_ali"),
            FrameData.load(root / "dev_feats", root / "dev_ali"))


def small_cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(**{"batch_size": 32, "lr": 0.05, "device": "cpu", **kw})
    cfg.model.hidden_dim = 32
    return cfg


def test_learns_separable_data_and_writes_exp_dir(synth, tmp_path):
    train, dev = load(synth)
    result = train_frame_classifier(small_cfg(max_epochs=4), train, dev, exp_dir=tmp_path / "exp")
    assert result.dev_frame_acc[0] > 0.95
    metrics = read_metrics(tmp_path / "exp")
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert {"train_ce", "train_frame_acc", "dev_ce", "dev_frame_acc", "lr", "frames_per_s"} <= set(metrics[0])
    for name in ("config.yaml", "env.json", "command.txt", "log/train.log", "final.pt"):
        assert (tmp_path / "exp" / name).is_file(), name
    model, spec = load_model(tmp_path / "exp")
    x = dev.windows(torch.arange(10), spec.left_context, spec.right_context)
    assert model(x).shape == (10, 4) and spec.get("input_spec") == {"feat_dim": 5, "left_context": 5, "right_context": 5}


def test_loss_hook_sees_consistent_batches_and_nan_names_step(synth, tmp_path):
    train, dev = load(synth)
    calls = []

    def loss_fn(logits, batch):
        calls.append(1)
        assert torch.equal(batch.x, train.windows(batch.frame_index, 5, 5))
        assert torch.equal(batch.y, train.labels[batch.frame_index])
        assert torch.equal(batch.utt_index, train.utt_of_frame[batch.frame_index])
        loss, metrics = hard_ce(logits[None], batch.y[None])
        return (loss * float("nan") if len(calls) == 3 else loss), metrics

    with pytest.raises(AsrKdError, match="NaN/inf at epoch 1, step 3 of"):
        train_frame_classifier(small_cfg(max_epochs=2), train, dev, loss_fn=loss_fn, exp_dir=tmp_path / "e")


def test_newbob_halves_then_stops():
    cfg = TrainConfig(schedule="newbob", lr=1.0, newbob_threshold=0.01, newbob_max_halvings=2, min_epochs=1)
    sched = LRSchedule(cfg, steps_per_epoch=10)
    assert not sched.end_epoch(1, 0.50) and sched.state["lr"] == 1.0
    assert not sched.end_epoch(2, 0.505) and sched.state["lr"] == 0.5    # gain 0.005 < 0.01
    assert not sched.end_epoch(3, 0.60) and sched.state["lr"] == 0.5
    assert not sched.end_epoch(4, 0.59) and sched.state["lr"] == 0.25
    assert sched.end_epoch(5, 0.60)                                        # third halving: stop


def test_tdnn_builds_and_checks_window():
    model = build_model(ModelConfig(name="tdnn", hidden_dim=8), input_dim=11 * 5, num_pdfs=4, feat_dim=5)
    assert model(torch.zeros(3, 55)).shape == (3, 4)
    with pytest.raises(AsrKdError, match="wider window"):
        build_model(ModelConfig(name="tdnn", tdnn_dilations=[4, 4]), input_dim=3 * 5, num_pdfs=4, feat_dim=5)
    with pytest.raises(AsrKdError, match="unknown architecture 'rnn'"):
        build_model(ModelConfig(name="rnn"), 10, 4)


def test_resume_with_changed_config_is_refused(synth, tmp_path):
    train, dev = load(synth)
    train_frame_classifier(small_cfg(max_epochs=1), train, dev, exp_dir=tmp_path / "e")
    with pytest.raises(AsrKdError, match="different config.*lr"):
        train_frame_classifier(small_cfg(max_epochs=1, lr=0.1), train, dev, exp_dir=tmp_path / "e")


def test_kill_9_then_resume_gives_identical_weights(synth, tmp_path):
    kill_9_after_epoch_2(synth, tmp_path / "killed")
    assert launch(synth, tmp_path / "killed").wait() == 0                  # resumes after epoch 2
    train, dev = load(synth)
    torch.set_num_threads(1)
    from nnet_resume_run import slow_ce
    train_frame_classifier(resume_config(), train, dev, loss_fn=slow_ce, exp_dir=tmp_path / "straight")
    assert_same_weights(tmp_path / "killed", tmp_path / "straight")
    assert [m["epoch"] for m in read_metrics(tmp_path / "killed")] == [1, 2, 3, 4]
    assert "resumed after epoch 2" in (tmp_path / "killed/log/train.log").read_text()

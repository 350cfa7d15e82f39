"""Stacked ensembles: forward and training equal separately trained members; combination; loglikes; CLI."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_kd.cli import main
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError
from asr_kd.nnet.ensemble import Ensemble, StackedLearner, combine_logits, train_ensemble
from asr_kd.nnet.frames import FrameData
from asr_kd.nnet.infer import BARRED_LOG_PRIOR, compute_loglikes, evaluate, log_priors, read_priors
from asr_kd.nnet.models import ModelConfig, ModelSpec, init_model, load_model
from asr_kd.nnet.train import TrainConfig, train_frame_classifier
from nnet_synth import make_sets


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_sets(root, num_utts=20, name="train", seed=0, noise=1.5)
    make_sets(root, num_utts=6, name="dev", seed=1, noise=1.5)
    return root


def load(root):
    return (FrameData.load(root / "train_feats", root / "train_ali"),
            FrameData.load(root / "dev_feats", root / "dev_ali"))


def cfg(**kw) -> TrainConfig:
    c = TrainConfig(**{"batch_size": 32, "lr": 0.05, "device": "cpu", "schedule": "cosine", "max_epochs": 2, **kw})
    c.model.hidden_dim, c.model.norm, c.model.dropout = 16, "layer", 0.0
    return c


def test_stacked_forward_equals_members():
    spec = ModelSpec(ModelConfig(hidden_dim=8, norm="layer"), feat_dim=3, left_context=1, right_context=1, num_pdfs=5,
                     input_norm=True)
    models = [init_model(spec, s, (torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 1, 4]))) for s in (1, 2, 3)]
    stacked = StackedLearner(models)
    stacked.module.eval()
    x = torch.randn(3, 7, 9)
    expected = torch.stack([m.eval()(x[k]) for k, m in enumerate(models)])
    torch.testing.assert_close(stacked.logits(x), expected)
    assert not torch.allclose(expected[0], expected[1])                 # seeds differ -> members differ


def test_ensemble_logits_stack_each_architecture_and_equal_members_run_alone():
    """Members grouped by architecture+window, each group one vmap call; output order = member order."""
    g = torch.Generator().manual_seed(0)
    lengths = [6, 2, 9]
    data = FrameData(torch.randn(sum(lengths), 3, generator=g), torch.tensor([0, 6, 8, 17]), ["a", "b", "c"])
    small = ModelSpec(ModelConfig(hidden_dim=8), feat_dim=3, left_context=1, right_context=1, num_pdfs=5)
    wide = ModelSpec(ModelConfig(hidden_dim=8), feat_dim=3, left_context=2, right_context=0, num_pdfs=5, input_norm=True)
    batch = ModelSpec(ModelConfig(hidden_dim=8, norm="batch"), feat_dim=3, left_context=1, right_context=1, num_pdfs=5)
    specs = [small, wide, small, batch, batch, small, wide]
    stats = (torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 1, 4]))
    members = [(init_model(spec, seed, stats).eval(), spec) for seed, spec in enumerate(specs)]
    idx = torch.tensor([16, 0, 7, 3, 8, 5])
    expected = torch.stack([m(data.windows(idx, s.left_context, s.right_context)) for m, s in members])
    ens = Ensemble(members)
    torch.testing.assert_close(ens.logits(data, idx), expected)
    assert sorted(len(gr.member_ids) for gr in ens.groups()) == [1, 1, 2, 3]  # BatchNorm members run alone
    # members' weights are views of the stacked tensors: no second copy
    stacked = next(gr for gr in ens.groups() if len(gr.member_ids) == 3)
    first = next(iter(stacked.params))
    assert dict(members[5][0].named_parameters())[first].data_ptr() == stacked.params[first][2].data_ptr()
    ens.to("cpu")  # a move re-stacks on the next call, with the same results
    torch.testing.assert_close(ens.logits(data, idx), expected)


def test_stacked_training_equals_separate_training(synth, tmp_path):
    train, dev = load(synth)
    dirs = train_ensemble(cfg(), 2, train, dev, tmp_path / "ens")
    assert (tmp_path / "ens/group_0/metrics.jsonl").is_file()           # the stacked path was taken
    for i, seed in enumerate((1, 2)):
        train_frame_classifier(cfg(seed=seed), train, dev, exp_dir=tmp_path / f"solo{seed}")
        solo, _ = load_model(tmp_path / f"solo{seed}")
        member, _ = load_model(dirs[i])
        for (name, a), b in zip(solo.state_dict().items(), member.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    a, b = (load_model(d)[0].state_dict() for d in dirs)
    assert not torch.allclose(a["net.0.weight"], b["net.0.weight"])
    torch.testing.assert_close(a["norm.mean"], train.feature_stats()[0])


def test_stacked_members_keep_their_own_lr_halvings_and_early_stop(synth, tmp_path):
    """Newbob per member: seeds 1, 2, 3 halve and stop at different epochs when trained alone; stacked,
    each member follows its own LR, stops at its own epoch (then no longer changes) and keeps its own
    best epoch, so its final.pt equals the separately trained model's."""
    train, dev = load(synth)
    newbob = dict(schedule="newbob", max_epochs=12, newbob_threshold=0.01, newbob_max_halvings=1, min_epochs=1)
    dirs = train_ensemble(cfg(**newbob), 3, train, dev, tmp_path / "ens")
    group = [json.loads(line) for line in (tmp_path / "ens/group_0/metrics.jsonl").read_text().splitlines()]
    solo_epochs = []
    for i, seed in enumerate((1, 2, 3)):
        result = train_frame_classifier(cfg(seed=seed, **newbob), train, dev, exp_dir=tmp_path / f"solo{seed}")
        solo = [json.loads(line) for line in (tmp_path / f"solo{seed}/metrics.jsonl").read_text().splitlines()]
        solo_epochs.append((result.best_epoch, result.last_epoch))
        assert [r["lr"][i] for r in group[:len(solo)]] == [r["lr"] for r in solo]          # own halvings
        assert [r["dev_frame_acc"][i] for r in group[:len(solo)]] == pytest.approx([r["dev_frame_acc"] for r in solo])
        after_stop = {r["dev_frame_acc"][i] for r in group[len(solo) - 1:]}
        assert len(after_stop) == 1                                  # stopped: its weights no longer change
        assert json.loads((dirs[i] / "member.json").read_text())["best_epoch"] == result.best_epoch
        a, b = load_model(tmp_path / f"solo{seed}")[0].state_dict(), load_model(dirs[i])[0].state_dict()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert len({last for _, last in solo_epochs}) == 3 and len({best for best, _ in solo_epochs}) == 3
    assert len(group) == max(last for _, last in solo_epochs)      # the group runs until its last member stops


def test_combination_hand_values():
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])       # members p = (.5, .5), (.75, .25)
    torch.testing.assert_close(combine_logits(logits, 1.0, "arith").exp(), torch.tensor([[0.625, 0.375]]))
    s3 = math.sqrt(3)
    torch.testing.assert_close(combine_logits(logits, 1.0, "geo").exp(), torch.tensor([[s3 / (s3 + 1), 1 / (s3 + 1)]]))
    with pytest.raises(AsrKdError, match="combine: unknown 'median'"):
        combine_logits(logits, 1.0, "median")


def test_loglikes_store_and_evaluate(synth, tmp_path):
    train, dev = load(synth)
    train_ensemble(cfg(max_epochs=1), 2, train, dev, tmp_path / "ens", stacked=False)
    ens = Ensemble.load(tmp_path / "ens")
    assert len(ens) == 2 and not (tmp_path / "ens/group_0").exists()    # sequential path
    priors = read_priors(synth / "dev_ali")
    store = compute_loglikes(ens, dev, tmp_path / "ll", priors=priors, dtype="float16")
    assert store.keys == dev.utt_ids and store.meta["kind"] == "loglike" and store.data.dtype == np.float16
    frames = dev.utt_frames(2)
    expected = ens.log_posteriors(dev, frames) - torch.log(torch.tensor(priors, dtype=torch.float32))
    np.testing.assert_allclose(store[dev.utt_ids[2]], expected.numpy(), rtol=2e-3, atol=2e-2)
    post = ens.posteriors(dev)
    assert post.shape == (dev.num_frames, 4)
    torch.testing.assert_close(post.sum(1), torch.ones(dev.num_frames))
    result = evaluate(ens, dev)
    logp = ens.log_posteriors(dev, dev.labelled_frames())
    assert result["frame_acc"] == pytest.approx(float((logp.argmax(1) == dev.labels).float().mean()))
    assert result["ce"] == pytest.approx(float(-logp.gather(1, dev.labels[:, None]).mean()), rel=1e-5)


def test_cli_train_ensemble_and_scoring(synth, tmp_path, capsys):
    args = [str(synth / n) for n in ("train_feats", "train_ali", "dev_feats", "dev_ali")]
    sets = ["--set", "max_epochs=1", "--set", "model.hidden_dim=8", "--set", "device=cpu"]
    assert main(["train-ensemble", *args, str(tmp_path / "ens"), "--k", "2", *sets]) == 0
    assert main(["compute-loglikes", str(tmp_path / "ens/member_0"), str(tmp_path / "ens/member_1"),
                 args[2], args[3], str(tmp_path / "ll"), "--combine", "geo"]) == 0
    assert RaggedStore(tmp_path / "ll").meta["combine"] == "geo"
    capsys.readouterr()
    assert main(["eval-frames", str(tmp_path / "ens"), args[2], args[3]]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["frame_acc"] <= 1
    assert main(["eval-frames", str(tmp_path / "nowhere"), args[2], args[3]]) == 1


def test_torchrun_two_ranks_split_members_on_cpu_gloo(synth, tmp_path):
    args = [str(synth / n) for n in ("train_feats", "train_ali", "dev_feats", "dev_ali")]
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(torchrun), "--nproc_per_node=2", "-m", "asr_kd", "train-ensemble", *args, str(tmp_path / "e"),
                    "--k", "2", "--set", "max_epochs=1", "--set", "model.hidden_dim=8"], env=env, check=True,
                   capture_output=True, cwd=Path(__file__).parents[1])
    assert json.loads((tmp_path / "e/ensemble.json").read_text())["seeds"] == [1, 2]
    logs = [(tmp_path / f"e/member_{i}/log/train.log").read_text() for i in (0, 1)]
    assert all("epoch 1" in text for text in logs)                      # each rank trained its own member
    assert len(Ensemble.load(tmp_path / "e")) == 2


def test_unseen_pdfs_are_barred_not_boosted():
    logp = log_priors(np.array([0.5, 0.5, 0.0]), 3)
    assert logp[2] == BARRED_LOG_PRIOR and logp[0] == pytest.approx(math.log(0.5))
    with pytest.raises(AsrKdError, match="priors have"):
        log_priors(np.array([1.0]), 3)

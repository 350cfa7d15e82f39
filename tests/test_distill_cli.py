"""The distillation CLI on tiny on-disk stores: cache-teacher, distill (cached and unlabelled), regularizer."""
import json

import numpy as np
import pytest

from asr_kd.cli import main
from asr_kd.data.store import write_store
from asr_kd.nnet.models import ModelConfig
from asr_kd.nnet.train import ModelSpec, init_model, save_final

NUM_PDFS, DIM = 4, 3


def make_set(root, name, num_utts, seed):
    rng = np.random.default_rng(seed)
    feats, ali = [], []
    for i in range(num_utts):
        x = rng.normal(size=(int(rng.integers(10, 20)), DIM)).astype(np.float32)
        feats.append((f"{name}{i:02d}", x))
        ali.append((f"{name}{i:02d}", (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0)))  # a learnable rule
    write_store(root / "feats" / name, feats, meta={"config": {}, "config_hash": "cfgA", "dim": DIM,
                                                   "frame_shift_ms": 10, "num_frames": sum(len(x) for _, x in feats)})
    write_store(root / "ali" / name, ali, meta={"num_pdfs": NUM_PDFS}, dtype="int32")
    np.save(root / "ali" / name / "priors.npy", np.full(NUM_PDFS, 1 / NUM_PDFS))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for name, n, seed in (("train", 30, 0), ("dev", 6, 1), ("test", 6, 2)):
        make_set(root, name, n, seed)
    spec = ModelSpec(ModelConfig(hidden_layers=1, hidden_dim=8), DIM, 1, 1, NUM_PDFS)
    for seed in (1, 2):
        save_final(root / f"teacher{seed}" / "final.pt", init_model(spec, seed).state_dict(), spec)
    return root


def common(root):
    return [str(root / "feats/dev"), str(root / "ali/dev"),
            "--set", "student.model.hidden_layers=1", "--set", "student.model.hidden_dim=8",
            "--set", "student.max_epochs=2", "--set", "student.device=cpu", "--set", "student.batch_size=32"]


def test_cache_teacher_then_distill_from_cache(root, capsys):
    assert main(["cache-teacher", str(root / "teacher1"), str(root / "teacher2"), "--feats", str(root / "feats/train"),
                 "--out", str(root / "cache"), "--combination", "geo", "--top-k", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["num_utts"] == 30 and report["num_frames"] > 300
    assert 0 < report["kept_mass_mean"] <= 1 and report["bytes"] == report["num_frames"] * 2 * (2 + 2)
    assert main(["distill", str(root / "feats/train"), str(root / "ali/train"), *common(root), str(root / "student"),
                 "--teacher-cache", str(root / "cache"), "--set", "loss.temperature=3"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["best_epoch"] >= 1 and 0 <= out["dev_frame_acc"] <= 1
    assert (root / "student" / "final.pt").is_file()
    record = json.loads((root / "student" / "distill.json").read_text())
    assert record["teacher"]["cache"] == str(root / "cache") and record["teacher"]["top_k"] == 2


def test_cache_teacher_full_within_budget_else_top_k(root, capsys, monkeypatch):
    args = ["cache-teacher", str(root / "teacher1"), "--feats", str(root / "feats/train"), "--temperature", "2"]
    assert main([*args, "--out", str(root / "c_full")]) == 0
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert full["bytes"] == full["full_fp16_bytes"] == full["num_frames"] * NUM_PDFS * 2
    monkeypatch.setattr("asr_kd.distill.cache.DEFAULT_TOP_K", 3)  # the fallback k, below this test's 4 pdfs
    assert main([*args, "--out", str(root / "c_topk"), "--budget-gb", "1e-6", "--nj", "2"]) == 0
    topk = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert topk["bytes"] == topk["num_frames"] * 3 * (2 + 2) and 0 < topk["kept_mass_mean"] < 1
    assert json.loads((root / "c_topk" / "meta.json").read_text())["top_k"] == 3


def test_cli_refuses_cache_of_other_teacher(root, capsys):
    # naming the models makes the loader compare checksums: teacher1 alone is not what was cached
    code = main(["distill", str(root / "feats/train"), str(root / "ali/train"), *common(root), str(root / "bad"),
                 "--teacher-cache", str(root / "cache"), "--teacher", str(root / "teacher1"), "--combination", "geo"])
    assert code == 1
    assert "teacher: member weight checksums differ" in capsys.readouterr().err


def test_unlabelled_transfer_and_regularizer(root, capsys):
    assert main(["distill", str(root / "feats/train"), "none", *common(root), str(root / "unlab"),
                 "--teacher", str(root / "teacher1"), "--teacher", str(root / "teacher2")]) == 0
    metrics = [json.loads(ln) for ln in (root / "unlab" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["train_loss_hard_ce"] == 0.0 for m in metrics)
    assert main(["regularizer", str(root / "feats/train"), str(root / "ali/train"), *common(root),
                 str(root / "feats/test"), str(root / "ali/test"), str(root / "reg"), "--fraction", "0.1",
                 "--teacher", str(root / "teacher1"), "--teacher", str(root / "teacher2")]) == 0
    summary = json.loads((root / "reg" / "regularizer.json").read_text())
    systems = [r["system"] for r in summary["rows"]]
    assert systems[0].startswith("baseline") and systems[1].startswith("hard targets (10.0% utts")
    assert systems[3].startswith("teacher (2 members")
    assert all(0 <= r["test_frame_acc"] <= 1 and "train_frame_acc" in r for r in summary["rows"])
    assert "| system | train_frame_acc |" in (root / "reg" / "regularizer.md").read_text()


def test_distill_compare_reports_gain_kept(root):
    baseline, student = root / "reg" / "baseline_full", root / "reg" / "soft_subset"
    if not (baseline / "final.pt").is_file():
        pytest.skip("needs the regularizer test's runs")
    assert main(["distill-compare", str(root / "cmp"), "--baseline", str(baseline), "--teacher", str(root / "teacher1"),
                 "--teacher", str(root / "teacher2"), "--student", str(student),
                 "--eval", "test", str(root / "feats/test"), str(root / "ali/test")]) == 0
    rows = json.loads((root / "cmp.json").read_text())["rows"]
    base, ens, stud = (r["test_frame_acc"] for r in rows)
    expected = None if ens <= base else round((stud - base) / (ens - base), 4)
    assert rows[2]["test_gain_kept"] == expected
    assert rows[0]["system"].startswith("baseline") and "test_gain_kept" not in rows[0]

"""asr-kd report on a small synthetic exp tree: table values, % of ensemble gain kept, seeds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asr_kd.cli import main
from asr_kd.errors import AsrKdError
from asr_kd.report.report import collect_run, gain_kept, mean_std, summarise, write_report


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _dnn(d: Path, in_dim: int, out_dim: int, dev_acc: float, test_acc: float, wer: float, sdi=(1, 1, 1)) -> None:
    """A system dir as the recipe leaves it: final.pt, metrics.jsonl, eval_*.json, decode_test/."""
    d.mkdir(parents=True, exist_ok=True)
    state = {"0.weight": torch.zeros(out_dim, in_dim), "0.bias": torch.zeros(out_dim)}
    torch.save({"state_dict": state, "spec": {}}, d / "final.pt")
    (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "dev_frame_acc": dev_acc - 0.1 / e}) + "\n"
                                             for e in (1, 2, 3)), encoding="utf-8")
    _scores(d, dev_acc, test_acc, wer, sdi)


def _scores(d: Path, dev_acc: float, test_acc: float, wer: float, sdi=(1, 1, 1)) -> None:
    _json(d / "eval_dev.json", {"frame_acc": dev_acc, "ce": 1.5, "num_frames": 100})
    _json(d / "eval_test.json", {"frame_acc": test_acc, "ce": 1.25, "num_frames": 100})
    s, dl, i = sdi
    _json(d / "decode_test" / "wer.json", {"wer": wer, "substitutions": s, "deletions": dl, "insertions": i,
                                           "words": 100, "real_time_factor": 0.01, "acoustic_scale": 0.1,
                                           "word_penalty": 0.5})
    _json(d / "decode_test" / "tuning.json", {"chosen_acoustic_scale": 0.1, "chosen_word_penalty": 0.5, "dev": [
        {"acoustic_scale": 0.1, "word_penalty": 0.0, "wer": 98.0},
        {"acoustic_scale": 0.1, "word_penalty": 0.5, "wer": wer + 1},
        {"acoustic_scale": 0.05, "word_penalty": 0.5, "wer": 99.0}]})


def make_exp(root: Path, shift: float = 0.0) -> Path:
    """baseline 0.50, ensemble arith 0.60, students 0.58 (T=2) and 0.55 (T=5) test frame accuracy."""
    exp = root
    _json(exp / "tri1" / "decode_test" / "wer.json", {"wer": 12.0, "substitutions": 8, "deletions": 2,
                                                       "insertions": 2, "words": 100, "real_time_factor": 0.02,
                                                       "acoustic_scale": 0.0833})
    (exp / "tri1" / "final.mdl").write_text("x", encoding="utf-8")
    _dnn(exp / "dnn", 10, 5, 0.49, 0.50 + shift, 10.0)
    ens = exp / "dnn_ensemble"
    for i, acc in enumerate((0.52, 0.54)):
        _dnn(ens / f"member_{i}", 10, 5, acc, acc, 9.0)
    _json(ens / "ensemble.json", {"members": ["member_0", "member_1"], "seeds": [2, 3]})
    _scores(ens / "combine_arith", 0.59, 0.60 + shift, 8.0)
    _scores(ens / "combine_geo", 0.58, 0.59, 8.5)
    for t, acc in ((2, 0.58), (5, 0.55)):
        d = exp / f"student_T{t}"
        _dnn(d, 10, 5, acc, acc + shift, 8.5)
        _json(d / "distill.json", {"loss": {"terms": {"soft_ce": 1.0, "hard_ce": 0.5}, "temperature": float(t)},
                                   "teacher": {"combination": "arith"}})
    _json(exp / "regularizer" / "regularizer.json", {"title": "Soft targets as a regularizer", "rows": [
        {"system": "hard targets (3%)", "train_frame_acc": 0.9, "dev_frame_acc": 0.4, "test_frame_acc": 0.41}]})
    (exp / ".done").mkdir()
    (exp / ".done" / "train_dnn").write_text("12\n", encoding="utf-8")
    return exp


def test_gain_kept_arithmetic():
    assert gain_kept(0.58, 0.50, 0.60) == pytest.approx(0.8)
    assert gain_kept(0.608, 0.589, 0.611) == pytest.approx(19 / 22)  # the paper's ~86%
    assert gain_kept(0.5, 0.6, 0.6) is None  # no ensemble gain: undefined, not a division by zero


def test_collect_run_values(tmp_path):
    run = collect_run(make_exp(tmp_path / "exp"))
    by_name = {s.name: s for s in run.systems}
    assert [s.kind for s in run.systems] == ["gmm", "baseline", "member", "member", "ensemble", "ensemble",
                                             "student", "student"]
    assert by_name["dnn"].values["params"] == 55
    assert by_name["dnn_ensemble (arith, K=2)"].values["params"] == 110  # sum of members
    assert by_name["student_T2"].values["gain_kept"] == pytest.approx(0.8)
    assert by_name["student_T5"].values["gain_kept"] == pytest.approx(0.5)
    assert by_name["student_T2"].values["dev_wer"] == pytest.approx(9.5)  # dev WER at the chosen (scale, penalty)
    assert by_name["tri1"].values["test_wer"] == 12.0 and "test_frame_acc" not in by_name["tri1"].values
    assert run.step_seconds == {"train_dnn": 12}


def test_report_files_and_table(tmp_path):
    exp = make_exp(tmp_path / "exp")
    assert main(["report", str(exp), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "RESULTS.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in md.splitlines() if line.startswith("| ") and "|---" not in line}
    assert rows["student_T2"][2] == "58.00"  # test frame acc %
    assert rows["student_T2"][-1] == "80.0"  # gain kept %
    assert rows["dnn"][6] == "10.00" and rows["dnn"][7] == "1/1/1"  # test WER, S/D/I
    assert rows["tri1"][6] == "12.00" and rows["tri1"][7] == "8/2/2"
    assert "members: mean +- std of 2" in rows and rows["members: mean +- std of 2"][2] == "53.00 ± 1.41"
    assert "Kaldi egs/an4/s5 tri3 SAT (GMM)" in rows  # quoted references
    assert "Soft targets as a regularizer" in md and "| hard targets (3%) | 90.00 | 40.00 | 41.00 |" in md
    results = json.loads((tmp_path / "rep" / "results.json").read_text(encoding="utf-8"))
    t2 = next(r for r in results["summary"] if r["name"] == "student_T2")
    assert t2["gain_kept"]["mean"] == pytest.approx(0.8) and t2["gain_kept"]["std"] is None
    for png in ("training_curves.png", "temperature_sweep.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"


def test_seeds_mean_std(tmp_path):
    a, b = make_exp(tmp_path / "a"), make_exp(tmp_path / "b", shift=0.02)
    rows = {r["name"]: r for r in summarise([collect_run(a), collect_run(b)])}
    mean, std = rows["dnn"]["test_frame_acc"]
    assert (mean, std) == pytest.approx(mean_std([0.50, 0.52]))
    assert std == pytest.approx(0.0141421, rel=1e-4)
    assert rows["dnn"]["n"] == 2
    assert rows["dnn"]["acoustic_scale"] == (0.1, 0.0)  # the same in both runs: std exactly 0
    write_report([a, b], tmp_path / "rep", plots=False)
    md = (tmp_path / "rep" / "RESULTS.md").read_text(encoding="utf-8")
    assert "dnn (n=2) |" in md and "| 1/1/1 | 0.1 ± 0 | 0.5 ± 0 |" in md


def test_empty_exp_dir_is_an_error(tmp_path):
    (tmp_path / "exp").mkdir()
    with pytest.raises(AsrKdError, match="no results found"):
        collect_run(tmp_path / "exp")


def test_gain_kept_uses_the_baseline_of_the_students_size():
    """A smaller student's hard-label twin (dnn_2x128) is its baseline; the 2 x 256 student keeps `dnn`."""
    from asr_kd.report.report import System, add_gain_kept

    def system(name, kind, params, acc, combination=None):
        return System(name, kind, Path(name), {"params": params, "test_frame_acc": acc}, combination=combination)

    systems = [system("dnn", "baseline", 300, 0.50), system("dnn_2x128", "baseline", 130, 0.40),
               system("dnn_ensemble (arith, K=4)", "ensemble", 1200, 0.60, "arith"),
               system("student_T2", "student", 300, 0.58, "arith"), system("student_T2_2x128", "student", 130, 0.50, "arith")]
    add_gain_kept(systems)
    assert systems[3].values["gain_kept"] == pytest.approx(0.8)   # (0.58 - 0.50) / (0.60 - 0.50)
    assert systems[4].values["gain_kept"] == pytest.approx(0.5)   # (0.50 - 0.40) / (0.60 - 0.40)

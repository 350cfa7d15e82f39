"""asr-kd report on a small synthetic exp tree: table values, the student chosen on dev, % of ensemble gain
kept (n/a when the ensemble is not better), paired bootstrap, system.json, per-corpus references, seeds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asr_kd.cli import main
from asr_kd.errors import AsrKdError
from asr_kd.report.report import collect_run, mean_std, summarise, write_report


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


def _decodes(d: Path, wrong: int) -> None:
    """decode_test/ref.txt + hyp.txt: 20 utterances of 5 words, one substitution in the first `wrong`."""
    refs = {f"u{i:02d}": "A B C D E" for i in range(20)}
    hyps = {u: ("A B C D X" if i < wrong else r) for i, (u, r) in enumerate(refs.items())}
    for name, table in (("ref.txt", refs), ("hyp.txt", hyps)):  # next to _scores' wer.json, as decode leaves them
        (d / "decode_test" / name).write_text("".join(f"{u} {t}\n" for u, t in table.items()), encoding="utf-8")


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


def make_exp(root: Path, shift: float = 0.0, ensemble_gain: float = 0.10) -> Path:
    """baseline 0.50, ensemble arith 0.60, students 0.58 (T=2) and 0.55 (T=5) test frame accuracy; on dev the
    students are 0.58 and 0.59, so dev picks T=5 where test would pick T=2. Decodes: baseline 10 of 20
    utterances wrong, ensemble 4, students 5 (T=2) and 2 (T=5)."""
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
    _scores(ens / "combine_arith", 0.59, 0.50 + ensemble_gain + shift, 8.0)
    _scores(ens / "combine_geo", 0.58, 0.59, 8.5)
    _decodes(exp / "dnn", 10)
    _decodes(ens / "combine_arith", 4)
    for t, dev_acc, acc, wrong in ((2, 0.58, 0.58, 5), (5, 0.59, 0.55, 2)):
        d = exp / f"student_T{t}"
        _dnn(d, 10, 5, dev_acc, acc + shift, 8.5)
        _decodes(d, wrong)
        _json(d / "distill.json", {"loss": {"terms": {"soft_ce": 1.0, "hard_ce": 0.5}, "temperature": float(t)},
                                   "teacher": {"combination": "arith"}})
    _json(exp / "regularizer" / "regularizer.json", {"title": "Soft targets as a regularizer", "rows": [
        {"system": "hard targets (3%)", "train_frame_acc": 0.9, "dev_frame_acc": 0.4, "test_frame_acc": 0.41}]})
    (exp / ".done").mkdir()
    (exp / ".done" / "train_dnn").write_text("12\n", encoding="utf-8")
    return exp


def test_collect_run_values(tmp_path):
    run = collect_run(make_exp(tmp_path / "exp"))
    by_name = {s.name: s for s in run.systems}
    assert [s.kind for s in run.systems] == ["gmm", "baseline", "member", "member", "ensemble", "ensemble",
                                             "student", "student"]
    assert by_name["dnn"].values["params"] == 55
    assert by_name["dnn_ensemble (arith, K=2)"].values["params"] == 110  # sum of members
    assert by_name["student_T2"].setting == "T=2, hard_ce 0.5, soft_ce 1"  # from distill.json (no system.json)
    assert by_name["student_T2"].values["dev_wer"] == pytest.approx(9.5)  # dev WER at the chosen (scale, penalty)
    assert by_name["tri1"].values["test_wer"] == 12.0 and "test_frame_acc" not in by_name["tri1"].values
    assert run.step_seconds == {"train_dnn": 12}


def test_report_files_and_table(tmp_path):
    exp = make_exp(tmp_path / "exp")
    assert main(["report", str(exp), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "RESULTS.md").read_text(encoding="utf-8")
    rows = _rows(md, "## All systems")
    assert rows["student_T2"][2] == "58.00"  # test frame acc %
    assert rows["dnn"][6] == "10.00" and rows["dnn"][7] == "1/1/1"  # test WER, S/D/I
    assert rows["tri1"][6] == "12.00" and rows["tri1"][7] == "8/2/2"
    assert "members: mean +- std of 2" in rows and rows["members: mean +- std of 2"][2] == "53.00 ± 1.41"
    assert "Kaldi egs/an4/s5 tri3 SAT (GMM)" not in md  # exp dir not under recipes/an4, no --corpus: no AN4 refs
    assert "Soft targets as a regularizer" in md and "| hard targets (3%) | 90.00 | 40.00 | 41.00 |" in md
    results = json.loads((tmp_path / "rep" / "results.json").read_text(encoding="utf-8"))
    assert results["gain_kept"]["student_T2"]["value"] == pytest.approx(0.8)
    assert results["headline"]["student"] == "student_T5"
    for png in ("dev_curves.png", "temperature_sweep.png", "wer_per_system.png"):
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


def _rows(md: str, section: str) -> dict[str, list[str]]:
    """The table under one '## ' heading: first cell -> the other cells."""
    body = md.split(section, 1)[1].split("\n## ", 1)[0]
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in body.splitlines() if line.startswith("| ") and "|---" not in line}


def test_student_chosen_on_dev_with_gain_kept_and_bootstrap(tmp_path):
    """T=5 has the best dev frame accuracy (0.59 vs 0.58), T=2 the best test (0.58 vs 0.55): the headline is
    T=5, its gain kept (0.55 - 0.50) / (0.60 - 0.50) = 50%, and the sweep keeps both rows."""
    exp = make_exp(tmp_path / "recipes" / "an4" / "exp")
    write_report([exp], tmp_path / "rep", plots=False)
    md = (tmp_path / "rep" / "RESULTS.md").read_text(encoding="utf-8")
    assert "Distilled student: **student_T5** (T=5, hard_ce 0.5, soft_ce 1)" in md
    headline = _rows(md, "## Headline")
    assert list(headline) == ["system", "tri1", "dnn", "dnn_ensemble (arith, K=2)", "student_T5"]
    assert headline["student_T5"][-1] == "50.0" and headline["student_T5"][2] == "55.00"
    sweep = _rows(md, "## Temperature / loss-weight sweep")
    assert sweep["student_T2"][-1] == "80.0" and sweep["student_T5 (chosen)"][-1] == "50.0"
    # paired bootstrap on the decodes: baseline 10 errors, student 2 -> +8 errors / 100 words
    sig = _rows(md, "## Is the student's WER really different?")
    vs_base = sig["student_T5 vs dnn"]
    assert vs_base[1] == "10.00 → 2.00" and vs_base[2].startswith("+8.00 [") and float(vs_base[3]) > 0.99
    assert sig["student_T5 vs dnn_ensemble (arith, K=2)"][1] == "4.00 → 2.00"
    assert "Kaldi egs/an4/s5 tri3 SAT (GMM)" in md  # recipes/an4/exp: AN4's references


def test_gain_kept_is_na_when_the_ensemble_is_not_better(tmp_path):
    # ensemble 0.505 vs baseline 0.50: inside the members' spread (0.52, 0.54: std 1.4 points)
    write_report([make_exp(tmp_path / "exp", ensemble_gain=0.005)], tmp_path / "rep", plots=False, corpus="yesno")
    md = (tmp_path / "rep" / "RESULTS.md").read_text(encoding="utf-8")
    assert _rows(md, "## Headline")["student_T5"][-1] == "n/a: ensemble not better"
    assert "Kaldi egs/an4/s5" not in md and "Kaldi egs/yesno/s5" in md  # --corpus yesno


def test_seeds_gain_kept_is_the_ratio_of_mean_gains(tmp_path):
    a, b = make_exp(tmp_path / "a"), make_exp(tmp_path / "b", ensemble_gain=0.02)
    write_report([a, b], tmp_path / "rep", plots=True)
    sweep = _rows((tmp_path / "rep" / "RESULTS.md").read_text(encoding="utf-8"), "## Temperature / loss-weight")
    # T=2: gains 0.08 and 0.08 over ensemble gains 0.10 and 0.02 -> 0.16 / 0.12 = 133.3%, per seed 80 and 400
    assert sweep["student_T2"][-1].startswith("133.3 [") and sweep["student_T2"][-1].endswith("(seeds: 80.0, 400.0)")


def test_system_json_says_what_a_dir_is(tmp_path):
    """A student in a dir whose name says nothing, described by its system.json; the old rules still read the rest."""
    exp = make_exp(tmp_path / "exp")
    d = exp / "run_b"
    _dnn(d, 10, 5, 0.6, 0.57, 8.0)
    _json(d / "system.json", {"kind": "student", "temperature": 3.0, "loss_terms": {"soft_ce": 1.0},
                              "teacher": {"combination": "arith"}, "seed": 4})
    _json(exp / "dnn" / "system.json", {"kind": "dnn", "seed": 1})
    by_name = {s.name: s for s in collect_run(exp).systems}
    assert by_name["run_b"].kind == "student" and by_name["run_b"].setting == "T=3, soft_ce 1"
    assert by_name["dnn"].kind == "baseline" and by_name["student_T2"].kind == "student"
    _json(d / "system.json", {"kind": "teacher"})
    with pytest.raises(AsrKdError, match="unknown kind 'teacher'"):
        collect_run(exp)


def test_score_map_decode_adds_the_unmapped_column(tmp_path):
    """A --score-map decode (TIMIT: 39-phone PER, 48-phone in `unmapped`) gets its extra column; others do not."""
    exp = make_exp(tmp_path / "exp")
    write_report([exp], tmp_path / "plain", plots=False)
    assert "before --score-map" not in (tmp_path / "plain" / "RESULTS.md").read_text(encoding="utf-8")
    w = json.loads((exp / "dnn" / "decode_test" / "wer.json").read_text())
    _json(exp / "dnn" / "decode_test" / "wer.json", {**w, "unmapped": {"wer": 14.5}})
    write_report([exp], tmp_path / "mapped", plots=False)
    rows = _rows((tmp_path / "mapped" / "RESULTS.md").read_text(encoding="utf-8"), "## All systems")
    at = rows["system"].index("test WER % before --score-map")
    assert rows["dnn"][at] == "14.50" and rows["dnn"][at - 1] == "10.00" and rows["tri1"][at] == ""

"""report-kinds: the table is read from the files the runs wrote; unfinished rows are marked, not invented."""
import json

from asr_kd.cli import main
from asr_kd.io import write_json
from asr_kd.nnet.models import ModelConfig, ModelSpec, init_model, save_final
from asr_kd.report.kinds import KindsRow, write_kinds_report


def model_dir(path, epochs):
    spec = ModelSpec(ModelConfig(hidden_layers=1, hidden_dim=8), 4, 1, 1, 5)
    save_final(path / "final.pt", init_model(spec, 1).state_dict(), spec)  # 12*8+8 + 8*5+5 = 149 params
    path.joinpath("metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "epoch_s": 1.25}) + "\n"
                                                      for e in range(1, epochs + 1)))


def scores_dir(path, acc, wer):
    write_json(path / "eval_dev.json", {"frame_acc": acc, "ce": 1.0, "num_frames": 10})
    write_json(path / "eval_test.json", {"frame_acc": acc - 0.01, "ce": 1.1, "num_frames": 10})
    write_json(path / "decode_test" / "wer.json", {"wer": wer, "substitutions": 1, "deletions": 0, "insertions": 0,
                                                   "words": 10, "acoustic_scale": 0.1, "word_penalty": 0.0})
    write_json(path / "decode_test" / "tuning.json", {"chosen_acoustic_scale": 0.1, "chosen_word_penalty": 0.0,
                                                      "dev": [{"acoustic_scale": 0.1, "word_penalty": 0.0, "wer": 9.5}]})


def test_kinds_table_reads_each_row_and_marks_unfinished_ones(tmp_path):
    model_dir(tmp_path / "hint", 3)
    scores_dir(tmp_path / "scores" / "hint", 0.55, 8.25)
    model_dir(tmp_path / "mutual" / "peer_0", 0)  # a peer: its curve is the group's
    (tmp_path / "mutual" / "peer_0" / "metrics.jsonl").unlink()
    (tmp_path / "mutual" / "group").mkdir()
    (tmp_path / "mutual" / "group" / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "epoch_s": 4.0}) + "\n")
    (tmp_path / ".done").mkdir()
    (tmp_path / ".done" / "kinds_hint").write_text("42\n")
    rows = [KindsRow("hint", tmp_path / "hint", tmp_path / "scores" / "hint", "kinds_hint"),
            KindsRow("mutual", tmp_path / "mutual" / "peer_0", tmp_path / "scores" / "mutual", "kinds_mutual"),
            KindsRow("sp", tmp_path / "sp", tmp_path / "scores" / "sp", "kinds_sp")]
    md = write_kinds_report(tmp_path / "report", rows, done_dir=tmp_path / ".done", seed=7).read_text()
    assert "One seed (seed 7)" in md
    assert "| hint | FitNets" in md and "| 149 | 3 | 3.8 | 42 | 55.00 | 54.00 | 9.50 | 8.25 |" in md
    assert "| 149 | 1 | 4.0 |  |" in md  # mutual: the group's one epoch; no step marker, no scores
    assert "| sp | similarity-preserving" in md and "(not finished)" in md
    record = json.loads((tmp_path / "report" / "kinds.json").read_text())
    assert [r["finished"] for r in record["rows"]] == [True, True, False]


def test_report_kinds_cli(tmp_path, capsys):
    model_dir(tmp_path / "baseline", 2)
    main(["report-kinds", str(tmp_path / "out"), "--row", "baseline", str(tmp_path / "baseline"),
          str(tmp_path / "none"), "kinds_baseline", "--done-dir", str(tmp_path / ".done"), "--seed", "1"])
    assert "| baseline | hard labels only" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "kinds.json").read_text())["rows"][0]["params"] == 149

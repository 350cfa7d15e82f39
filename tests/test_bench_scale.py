"""bench/bench_scale.py's parts that decide its numbers: the N x corpus (distinct utterance and
speaker ids), the per-child measurement, the log-log exponent, and the goal verdicts."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from asr_kd.data.datadir import load_datadir, write_datadir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import bench_scale  # noqa: E402


@pytest.fixture
def tiny_train(tmp_path):
    utts = {"spka-u1": "spka", "spka-u2": "spka", "spkb-u3": "spkb"}
    return write_datadir(tmp_path / "train", wav_scp={u: f"/audio/{u}.wav" for u in utts}, utt2spk=utts,
                         text={u: "HELLO WORLD" for u in utts}, utt2dur={u: 1.5 for u in utts})


def test_nine_x_corpus_is_three_speeds_times_three_repeats_with_distinct_ids(tiny_train, tmp_path):
    nine = bench_scale.build_corpus(str(tiny_train.path), 9, str(tmp_path / "n9"))
    assert len(nine) == 27 and len(set(nine.utt2spk)) == 27
    assert len(nine.spk2utt) == 9 * len(tiny_train.spk2utt)
    assert "r3-sp0.9-spka-u1" in nine.utt2spk and nine.utt2spk["r3-sp0.9-spka-u1"] == "r3-sp0.9-spka"
    assert "speed 1.1" in nine.wav_scp["r2-sp1.1-spkb-u3"]
    assert nine.utt2dur["sp0.9-spka-u1"] == pytest.approx(1.5 / 0.9, abs=1e-4)  # utt2dur keeps 4 decimals
    assert nine.text["r2-spkb-u3"] == "HELLO WORLD"
    assert not (tmp_path / "n9.sp").exists()
    one = bench_scale.build_corpus(str(tiny_train.path), 1, str(tmp_path / "n1"))
    assert one.utt2spk == tiny_train.utt2spk
    with pytest.raises(SystemExit, match="multiple of 3"):
        bench_scale.build_corpus(str(tiny_train.path), 2, str(tmp_path / "n2"))


def test_run_stage_measures_the_child_and_names_a_failed_stage(tmp_path):
    record = bench_scale.run_stage("help", ["--help"], str(tmp_path))
    assert record["seconds"] > 0 and record["cpu_seconds"] > 0 and record["peak_rss_mb"] > 10  # a Python interpreter, not this process's 0
    assert "usage" in (tmp_path / "help.log").read_text()
    with pytest.raises(SystemExit, match=r"stage bad failed .*bad\.log"):
        bench_scale.run_stage("bad", ["no-such-command"], str(tmp_path))


def test_loglog_slope_recovers_the_exponent():
    assert bench_scale.loglog_slope([1, 3, 9], [2.0, 2.0 * 3 ** 1.5, 2.0 * 9 ** 1.5]) == pytest.approx(1.5)
    assert bench_scale.loglog_slope([1], [5.0]) is None


def fake_run(n, frames, seconds_by_stage, rss_by_stage):
    stages = {name: {"seconds": seconds_by_stage(name, n), "cpu_seconds": 2 * seconds_by_stage(name, n),
                     "peak_rss_mb": rss_by_stage(name, n)}
              for name, _ in bench_scale.stage_commands(fake_args(), "", "")}
    return {"n": n, "num_utts": 100 * n, "frames": frames, "complete": True, "stages": stages}


def fake_args():
    return argparse.Namespace(nj=2, gmm_num_utts=0, num_leaves=500, tot_gauss=4000, top_k=20, lang="L",
                              dev_dir="D", dev_feats="F")


def test_summary_flags_a_quadratic_stage_and_a_growing_rss_and_projects_linearly():
    def seconds(name, n):
        return 10.0 * n * n if name == "train_tri" else 10.0 * n

    def rss(name, n):
        return 100.0 * n if name == "align_tri" else 100.0

    runs = [fake_run(n, 1000 * n, seconds, rss) for n in (9, 1, 3)]
    summary = bench_scale.summarise(runs, fake_args())
    assert summary["exponent_goal_missed_by"] == ["train_tri"] == summary["cpu_exponent_goal_missed_by"]
    assert summary["rss_goal_missed_by"] == ["align_tri"]
    mono = summary["stages"]["train_mono"]
    assert mono["exponent_vs_n"] == pytest.approx(1.0) and mono["rss_ratio_largest_n_over_1"] == 1.0
    assert summary["stages"]["train_tri"]["cpu_exponent_vs_n"] == pytest.approx(2.0)
    # 90 s for 9000 frames at nj 2 -> 0.01 s/frame; 36M frames on 16 cores (8x) = 45,000 s = 12.5 h
    assert mono["projection_hours_16_cores"]["librispeech_100"] == pytest.approx(12.5)
    assert summary["stages"]["train_dnn"]["projection_speedup_assumed"] == 1.0
    # CPU seconds are 2x wall here: 180 s / 9000 frames x 36M frames / 16 cores = 45,000 s
    assert mono["projection_hours_16_cores_from_cpu"]["librispeech_100"] == pytest.approx(12.5)
    assert summary["stages"]["train_dnn"]["projection_hours_16_cores_from_cpu"]["librispeech_100"] == \
        pytest.approx(100.0)  # 0.02 cpu s/frame x 36M / 2 threads


def test_summary_of_a_run_cut_short_uses_what_finished():
    def seconds(name, n):
        return 10.0 * n

    def rss(name, n):
        return 100.0

    runs = [fake_run(n, 1000 * n, seconds, rss) for n in (1, 3, 9)]
    del runs[2]["stages"]["distill"]
    summary = bench_scale.summarise(runs, fake_args())
    assert summary["stages"]["distill"]["projection_from_n"] == 3
    assert summary["stages"]["distill"]["rss_ratio_of_n"] == "3/1"
    assert summary["stages"]["train_mono"]["projection_from_n"] == 9
    assert summary["exponent_goal_missed_by"] == [] and summary["not_measured_above_n1"] == []

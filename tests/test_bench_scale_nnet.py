"""bench/bench_scale_nnet.py at tiny F: the three phases run in fresh processes and the JSON parses."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_scale_nnet_tiny_sets_report_every_phase(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "bench" / "bench_scale_nnet.py"), "--frames", "40000", "20000",
           "--work", str(tmp_path), "--budget", "8192", "--train-steps", "3", "--distill-steps", "2",
           "--batch-size", "256", "--cache-frames", "3000", "--cache-batch", "1024", "--dev-frames", "2000",
           "--threads", "1", "--rounds", "1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert [r["F"] for r in report["runs"]] == [20000, 40000]  # smallest first
    for run in report["runs"]:
        assert run["frames"] == run["F"] and run["streamed"] is True
        assert run["train"]["steps"] == 3 and run["distill"]["steps"] == 2
        assert run["distill"]["transfer_streamed"] is True
        assert 2000 <= run["cache"]["cached_frames"] <= 4500  # the fixed subset, not the whole set
        for phase in ("train", "cache", "distill"):
            assert run[phase]["peak_rss_mb"] > run["baseline_mb"] > 0
            assert run[phase]["frames_per_s"] > 0
    # the synthetic sets stay under --work, where the next run reuses them
    assert (tmp_path / "F20000" / "ali" / "priors.npy").is_file()
    ratios = report["ratios_largest_to_smallest"]
    assert [r["F"] for r in report["per_F"]] == [20000, 40000]
    big, small = report["per_F"][1]["train"], report["per_F"][0]["train"]
    assert ratios["train"]["peak_rss_ratio"] == round(big["peak_rss_mb"] / small["peak_rss_mb"], 3)
    assert isinstance(ratios["train"]["rss_goal_met"], bool)

"""recipes/utils/parallel_steps.sh: independent recipe steps side by side (in_parallel, wait_parallel)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parents[1] / "recipes/utils/parallel_steps.sh"


def run_script(tmp_path: Path, body: str, dnn_jobs: int = 2, **kwargs) -> subprocess.Popen:
    script = tmp_path / "t.sh"
    script.write_text(f"set -euo pipefail\ndnn_jobs={dnn_jobs}\n. {HELPERS}\n{body}\n")
    kwargs = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.Popen(["bash", str(script)], cwd=tmp_path, text=True, **kwargs)


# Each job waits (up to 20 s) for the other's file: both finish only if they run at the same time.
MEET = """
meet() { touch "$1"; for _ in $(seq 200); do [ -e "$2" ] && { touch "$1.done"; return 0; }; sleep 0.1; done; return 1; }
in_parallel meet a b
in_parallel meet b a
wait_parallel
echo finished
"""


def test_two_jobs_run_at_the_same_time(tmp_path):
    proc = run_script(tmp_path, MEET)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "finished"
    assert (tmp_path / "a.done").exists() and (tmp_path / "b.done").exists()


def test_one_job_at_a_time_when_dnn_jobs_is_1(tmp_path):
    proc = run_script(tmp_path, MEET.replace("200", "10"), dnn_jobs=1)  # serial: the first job never meets
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "finished" not in out
    assert "a step run in parallel failed" in err


def test_a_failed_job_stops_the_recipe_after_the_others_finish(tmp_path):
    body = "slow() { sleep 1; touch slow.done; }\nin_parallel slow\nin_parallel false\nwait_parallel\necho after"
    proc = run_script(tmp_path, body)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "after" not in out
    assert (tmp_path / "slow.done").exists(), "the job that succeeded was cut short"


def test_kill_9_of_the_recipe_ends_its_background_jobs(tmp_path):
    body = 'record() { echo $BASHPID > job.pid; sleep 60; }\nin_parallel record\nwait_parallel'
    proc = run_script(tmp_path, body, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = tmp_path / "job.pid"
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        time.sleep(0.05)
    job = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)  # as `kill -9 run.sh`: no trap runs
    proc.wait(timeout=10)
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{job}").exists():
        time.sleep(0.1)
    try:
        assert not Path(f"/proc/{job}").exists(), "the background job outlived the killed recipe"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the job's own `sleep` (an asr-kd child dies by PDEATHSIG)
        except ProcessLookupError:
            pass


@pytest.fixture(autouse=True)
def _bash_only():
    if not Path("/bin/bash").exists():
        pytest.skip("needs bash")

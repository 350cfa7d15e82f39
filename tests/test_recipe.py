"""recipes/an4/run.sh end to end on a few AN4 utterances with tiny models (CPU), and its contracts:
unknown options are errors, finished steps are skipped, and a run killed (SIGKILL) in the middle
of a stage, then re-run, gives the same report as an uninterrupted run."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asr_kd.io import sha256_file

REPO = Path(__file__).resolve().parents[1]
RUN_SH = REPO / "recipes" / "an4" / "run.sh"
CORPUS = Path(__file__).parents[2] / "shared/corpora/an4"
TINY = ["--subset", "30", "--num-leaves", "60", "--tot-gauss", "200", "--hidden-dim", "32", "--max-epochs", "3",
        "--num-members", "2", "--temperatures", "2", "--lm-weights", "10,12", "--beam", "8",
        "--max-active", "500", "--device", "cpu", "--nj", "1"]
DNN_SYSTEMS = ["dnn", "dnn_ensemble/member_0", "dnn_ensemble/member_1", "dnn_ensemble (arith, K=2)",
               "dnn_ensemble (geo, K=2)", "student_T2"]
TIMING_KEYS = {"rtf"}  # wall-clock numbers: differ between any two runs

needs_corpus = pytest.mark.skipif(not (CORPUS / "etc" / "an4_train.fileids").is_file(),
                                  reason=f"AN4 corpus not found at {CORPUS}")


def recipe(root: Path, *args: str, check: bool = True, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = ["bash", str(RUN_SH), "--python", sys.executable, "--corpus", str(CORPUS),
           "--data", str(root / "data"), "--exp", str(root / "exp"), *TINY, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"recipe failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def table_rows(md: str, section: str = "## All systems") -> dict[str, list[str]]:
    """The table under one '## ' heading of RESULTS.md: first cell -> the other cells."""
    body = md.split(section, 1)[1].split("\n## ", 1)[0]
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in body.splitlines() if line.startswith("| ") and "|---" not in line}


def comparable(results_json: Path) -> list[dict]:
    """The report's per-system numbers without wall-clock ones."""
    summary = json.loads(results_json.read_text(encoding="utf-8"))["summary"]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in summary]


def kill_when_written(root: Path, stage: str, checkpoint: Path) -> None:
    """Run the recipe from `stage` and SIGKILL its whole process group as soon as `checkpoint` exists."""
    proc = recipe(root, "--stage", stage, start_new_session=True)
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert killed, "the recipe ended before it could be killed mid-stage"


@pytest.fixture(scope="module")
def an4_run(tmp_path_factory):
    """GMM stages (0-4) once, a snapshot of that state, then the DNN stages (5-9)."""
    root = tmp_path_factory.mktemp("an4_run")
    recipe(root, "--stop-stage", "4")
    snapshot = tmp_path_factory.mktemp("an4_gmm") / "root"
    shutil.copytree(root, snapshot, symlinks=True)
    out = recipe(root, "--stage", "5")
    return root, snapshot, out.stdout


@needs_corpus
def test_end_to_end_report(an4_run):
    root, _, stdout = an4_run
    md = (root / "exp" / "report" / "RESULTS.md").read_text(encoding="utf-8")
    rows = table_rows(md)
    for name in ["mono", "tri1", *DNN_SYSTEMS]:
        assert name in rows, f"{name} missing from RESULTS.md:\n{md}"
    header = ["params", "dev frame acc %", "test frame acc %", "dev CE", "test CE", "dev WER %", "test WER %"]
    assert list(rows["system"][:7]) == header
    for name in DNN_SYSTEMS:
        acc, wer = rows[name][2], rows[name][6]
        assert 0 < float(acc) <= 100, f"{name}: {rows[name]}"
        if name == "dnn_ensemble/member_1":  # past --decode-members 1: frame metrics only
            assert wer == "", rows[name]
        else:
            assert 0 <= float(wer), f"{name}: {rows[name]}"
    sweep = {name.removesuffix(" (chosen)"): cells for name, cells in table_rows(md, "## Temperature").items()}
    assert sweep["student_T2"][-1] != ""  # % of ensemble gain kept (or why not) is stated
    assert "Distilled student: **student_T" in md  # the headline student, chosen on dev
    assert json.loads((root / "exp" / "student_T2" / "system.json").read_text())["temperature"] == 2.0
    assert (root / "exp" / "report" / "results.json").is_file()
    assert not (root / "exp" / "dnn" / "loglikes_test").exists()  # removed after decoding by default


@needs_corpus
def test_rerun_is_a_no_op(an4_run):
    root, _, _ = an4_run
    before = {p: p.stat().st_mtime_ns for p in (root / "exp").rglob("final.pt")}
    out = recipe(root, "--stop-stage", "8")
    assert "[run ]" not in out.stdout and "[done] distill_T2" in out.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (root / "exp").rglob("final.pt")}


@needs_corpus
def test_killed_mid_stage_then_rerun_gives_the_same_report(an4_run):
    """SIGKILL the whole recipe while the ensemble trains (after its first checkpoint), re-run it."""
    root, snapshot, _ = an4_run
    copy = snapshot.parent / "killed"
    shutil.copytree(snapshot, copy, symlinks=True)
    kill_when_written(copy, "5", copy / "exp" / "dnn_ensemble" / "group_0" / "checkpoints" / "epoch_1.pt")
    assert not (copy / "exp" / ".done" / "train_ensemble").exists()  # no marker for an unfinished step
    recipe(copy, "--stage", "5")
    assert comparable(copy / "exp" / "report" / "results.json") == comparable(root / "exp" / "report" / "results.json")


GMM_STEPS = ["train_mono", "align_mono", "make_graph_mono", "decode_mono_test", "train_tri1", "align_tri1_train",
             "align_tri1_dev", "align_tri1_test", "make_graph", "decode_tri1_test"]


@needs_corpus
def test_killed_mid_gmm_stage_then_rerun_gives_the_same_report(an4_run):
    """SIGKILL the recipe in the middle of train-mono (after its 3rd pass), re-run stages 3-9:
    GMM training is seeded, so the models, alignments and the report equal the uninterrupted run's."""
    root, snapshot, _ = an4_run
    copy = snapshot.parent / "killed_gmm"
    shutil.copytree(snapshot, copy, symlinks=True)
    for name in GMM_STEPS:
        (copy / "exp" / ".done" / name).unlink()
    for gmm_dir in ("mono", "mono_ali", "tri1", "tri1_ali", "tri1_ali_dev", "tri1_ali_test"):
        shutil.rmtree(copy / "exp" / gmm_dir)
    kill_when_written(copy, "3", copy / "exp" / "mono" / "3.mdl")
    assert not (copy / "exp" / ".done" / "train_mono").exists() and not (copy / "exp" / "mono" / "final.mdl").exists()
    recipe(copy, "--stage", "3")
    for model in ("mono/final.mdl", "tri1/final.mdl", "tri1_ali/data.bin"):
        assert sha256_file(copy / "exp" / model) == sha256_file(snapshot / "exp" / model), model
    assert comparable(copy / "exp" / "report" / "results.json") == comparable(root / "exp" / "report" / "results.json")


@needs_corpus
def test_another_seed_reuses_the_gmm_stages(an4_run, tmp_path):
    """--seed 2 --exp EXP2 --gmm-exp EXP: new DNN seeds, trained on the first run's alignments."""
    root, _, _ = an4_run
    exp2 = tmp_path / "exp_seed2"
    recipe(root, "--stage", "5", "--stop-stage", "6", "--seed", "2", "--exp", str(exp2), "--gmm-exp", str(root / "exp"))
    assert json.loads((exp2 / "dnn_ensemble" / "ensemble.json").read_text())["seeds"] == [102, 103]
    assert json.loads((root / "exp" / "dnn_ensemble" / "ensemble.json").read_text())["seeds"] == [2, 3]
    assert "seed: 2" in (exp2 / "dnn" / "config.yaml").read_text()
    assert sorted(p.name for p in exp2.iterdir()) == [".done", "dnn", "dnn_ensemble", "log"]  # no GMM copies


@needs_corpus
def test_speed_perturb_trains_the_dnn_on_train_sp(an4_run, tmp_path):
    """--speed-perturb: train_sp (originals + sp0.9-/sp1.1- copies), its features and tri1 alignments
    are made, and the baseline DNN trains on them; the GMM stages already done are not redone."""
    _, snapshot, _ = an4_run
    copy = tmp_path / "sp"
    shutil.copytree(snapshot, copy, symlinks=True)
    out = recipe(copy, "--stage", "2", "--stop-stage", "5", "--speed-perturb", "0.9 1.0 1.1")
    assert "[done] train_tri1" in out.stdout and "[run ] align_tri1_train_sp" in out.stdout
    train_sp = (copy / "data" / "train_sub30_sp" / "utt2spk").read_text().splitlines()
    assert len(train_sp) == 90 and sum(line.startswith("sp0.9-") for line in train_sp) == 30
    keys = (copy / "exp" / "tri1_ali_train_sp" / "keys.txt").read_text().split()
    assert len(keys) == 90 and keys == (copy / "data" / "fbank" / "train_sp" / "keys.txt").read_text().split()
    command = (copy / "exp" / "dnn" / "command.txt").read_text()
    assert f"{copy / 'data' / 'fbank' / 'train_sp'} {copy / 'exp' / 'tri1_ali_train_sp'} " in command


@needs_corpus
def test_gmm_stage_tri3_labels_and_feeds_the_dnn(an4_run, tmp_path):
    """--gmm-stage tri3 --dnn-input fmllr: tri2 and tri3 are trained and decoded after tri1, every set
    is aligned with tri3 on fMLLR-adapted features, and the baseline DNN trains on tri3's labels
    and fMLLR features; tri1 and its alignments are not redone."""
    _, snapshot, _ = an4_run
    copy = tmp_path / "tri3"
    shutil.copytree(snapshot, copy, symlinks=True)
    out = recipe(copy, "--stage", "4", "--stop-stage", "5", "--gmm-stage", "tri3", "--dnn-input", "fmllr")
    assert "[done] train_tri1" in out.stdout and "[run ] train_tri3" in out.stdout
    exp = copy / "exp"
    for decode in ("tri2/decode_test", "tri3/decode_si_test", "tri3/decode_test"):
        assert json.loads((exp / decode / "wer.json").read_text())["words"] > 0, decode
    assert (exp / "tri3" / "si" / "final.mdl").is_file()
    keys = (exp / "tri3_ali_dev" / "keys.txt").read_text().split()
    assert keys and set(keys) <= set((copy / "data" / "mfcc" / "dev" / "keys.txt").read_text().split())
    fmllr = json.loads((exp / "tri3" / "fmllr_feats" / "train" / "meta.json").read_text())
    assert fmllr["dim"] == 40 and fmllr["view"]["fmllr"]
    command = (exp / "dnn" / "command.txt").read_text()
    assert f"{exp / 'tri3' / 'fmllr_feats' / 'train'} {exp / 'tri3_ali'} " in command


def test_unknown_option_is_an_error(tmp_path):
    out = subprocess.run(["bash", str(RUN_SH), "--no-such-option", "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "unknown option --no-such-option" in out.stderr
    out = subprocess.run(["bash", str(RUN_SH), "--stage=3"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--name value" in out.stderr


def test_help_lists_shared_and_corpus_options():
    out = subprocess.run(["bash", str(RUN_SH), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for option in ("--corpus", "--subset", "--stage", "--num-members", "--temperatures", "--device", "--seed",
                   "--gmm-exp", "--word-penalties"):
        assert option in out.stdout
    assert "--train-dir" not in out.stdout  # derived paths are not options


@needs_corpus
def test_kaldi_dir_recipe_on_given_data_dirs(an4_run, tmp_path):
    """recipes/kaldi_dir: a corpus given only as Kaldi data dirs + dict dir (here: AN4 subsets)."""
    _, snapshot, _ = an4_run
    given = snapshot / "data"
    cmd = ["bash", str(REPO / "recipes" / "kaldi_dir" / "run.sh"), "--python", sys.executable,
           "--train-dir", str(given / "train_sub30"), "--dev-dir", str(given / "dev_sub30"),
           "--test-dir", str(given / "test_sub30"), "--dict-dir", str(given / "local" / "dict"),
           "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"), "--nj", "1", "--stop-stage", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[run ] validate_train" in out.stdout
    for store in ("mfcc/train", "fbank/dev", "fbank/test"):
        meta = json.loads((tmp_path / "data" / store / "meta.json").read_text(encoding="utf-8"))
        assert meta["num_utts"] == 30
    assert (tmp_path / "data" / "lang_test_bg" / "G.fst").is_file()
    missing = subprocess.run(cmd[:2] + ["--train-dir", "x"], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "--dev-dir is required" in missing.stderr

"""Issue 15 items 1-3, each reproduction as a test: stale reuse, two writers, pdfs matched by count only.

Tiny synthetic stores (as tests/test_distill_cli.py); every command runs through `asr_kd.cli.main`.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_kd.cli import main
from asr_kd.data.store import write_store
from asr_kd.nnet.models import ModelConfig
from asr_kd.nnet.train import ModelSpec, init_model, save_final
from asr_kd.steps.identity import changes, fingerprint, path_identity
from asr_kd.steps.lock import OutputLock, lock_path_of

NUM_PDFS, DIM = 4, 3
TREE_A, TREE_B = "a" * 64, "b" * 64
REPO = Path(__file__).resolve().parents[1]


def make_set(root: Path, name: str, num_utts: int, seed: int, tree: str | None = TREE_A) -> None:
    rng = np.random.default_rng(seed)
    feats, ali = [], []
    for i in range(num_utts):
        x = rng.normal(size=(int(rng.integers(10, 20)), DIM)).astype(np.float32)
        feats.append((f"{name}{i:02d}", x))
        ali.append((f"{name}{i:02d}", (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0)))
    write_store(root / "feats" / name, feats, meta={"config": {}, "config_hash": "cfgA", "dim": DIM,
                                                   "frame_shift_ms": 10})
    meta = {"num_pdfs": NUM_PDFS, **({"tree_sha256": tree} if tree else {})}
    write_store(root / "ali" / name, ali, meta=meta, dtype="int32")
    np.save(root / "ali" / name / "priors.npy", np.full(NUM_PDFS, 1 / NUM_PDFS))


@pytest.fixture()
def root(tmp_path):
    make_set(tmp_path, "train", 24, 0)
    make_set(tmp_path, "dev", 6, 1)
    make_set(tmp_path, "other", 24, 5)  # different data, same shape
    make_set(tmp_path, "mono", 24, 0, tree=TREE_B)  # the train set aligned with another tree, same pdf count
    make_set(tmp_path, "legacy", 24, 0, tree=None)  # made before tree identity existed
    return tmp_path


def train_args(root: Path, out: Path, *extra: str, train: str = "train", dev_ali: str = "dev") -> list[str]:
    return ["train", str(root / "feats" / train), str(root / "ali" / train), str(root / "feats/dev"),
            str(root / "ali" / dev_ali), str(out), "--set", "model.hidden_layers=1", "--set", "model.hidden_dim=8",
            "--set", "max_epochs=2", "--set", "min_epochs=1", "--set", "device=cpu", "--set", "batch_size=64", *extra]


def spec_of(model_dir: Path) -> dict:
    return torch.load(model_dir / "final.pt", weights_only=True)["spec"]


# ------------------------------------------------------------------ stale reuse
def test_finished_train_dir_is_skipped_with_same_fingerprint_and_refused_with_another(root, capsys):
    out = root / "dnn"
    assert main(train_args(root, out)) == 0
    first = (out / "final.pt").read_bytes()
    assert main(train_args(root, out)) == 0
    assert "already done with the same inputs and options" in capsys.readouterr().out
    assert (out / "final.pt").read_bytes() == first
    # before: the old 8-unit model came back silently; now the changed key is named
    assert main(train_args(root, out, "--set", "model.hidden_dim=16")) == 1
    err = capsys.readouterr().err
    assert "config model.hidden_dim: 8 -> 16" in err and "--overwrite" in err
    assert (out / "final.pt").read_bytes() == first  # nothing written
    assert main(train_args(root, out, "--set", "model.hidden_dim=16", "--overwrite")) == 0
    assert spec_of(out)["model"]["hidden_dim"] == 16
    assert not list(out.glob("checkpoints/*")) or all(
        torch.load(c, weights_only=False)["spec"]["model"]["hidden_dim"] == 16 for c in out.glob("checkpoints/*.pt")
        if "spec" in torch.load(c, weights_only=False))


def test_killed_train_dir_with_other_data_is_refused_naming_the_input(root, capsys):
    out = root / "dnn"
    assert main(train_args(root, out)) == 0
    record = json.loads((out / "step.json").read_text())
    (out / "step.json").write_text(json.dumps({**record, "finished": False}))  # as left by a kill mid-run
    (out / "final.pt").unlink()
    # before: `resumed after epoch 2` on the other data, exit 0
    assert main(train_args(root, out, train="other")) == 1
    err = capsys.readouterr().err
    assert "input feats" in err and "input ali" in err and str(root / "feats/other") in err
    assert not (out / "final.pt").exists()
    assert main(train_args(root, out)) == 0  # the same step resumes and finishes
    assert (out / "final.pt").is_file()


def test_dir_without_step_record_is_refused(root, capsys):
    out = root / "dnn"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "epoch_1.pt").write_bytes(b"from an older asr_kd")
    assert main(train_args(root, out)) == 1
    assert "no step record" in capsys.readouterr().err


def test_fingerprint_changes_name_config_keys_options_and_inputs(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one")
    b.write_text("two")
    old = fingerprint("train", config={"lr": 0.1, "model": {"dim": 8}}, options={"k": 4}, inputs={"ali": str(a)})
    assert changes(old, fingerprint("train", config={"lr": 0.1, "model": {"dim": 8}}, options={"k": 4},
                                    inputs={"ali": str(a)})) == []
    new = fingerprint("train", config={"lr": 0.1, "model": {"dim": 9}}, options={"k": 5}, inputs={"ali": str(b)})
    found = changes(old, new)
    assert found[0] == "config model.dim: 8 -> 9" and found[1] == "options k: 4 -> 5"
    assert found[2].startswith(f"input ali ({b})") and f"was {a}" in found[2]
    a.write_text("changed")
    assert "content changed" in changes(old, fingerprint("train", config={"lr": 0.1, "model": {"dim": 8}},
                                                         options={"k": 4}, inputs={"ali": str(a)}))[0]


def test_model_dir_identity_ignores_results_written_beside_the_model(root):
    out = root / "dnn"
    assert main(train_args(root, out)) == 0
    before = path_identity(out)
    (out / "eval_dev.json").write_text("{}")
    (out / "decode_test").mkdir()
    assert path_identity(out) == before
    assert path_identity(root / "ali/train") != path_identity(root / "ali/mono")
    for name in ("train", "mono"):  # alignment stores made by `align` keep copies of their GMM's model and tree
        (root / "ali" / name / "final.mdl").write_text("the same GMM")
        (root / "ali" / name / "tree").write_text("the same tree")
    assert path_identity(root / "ali/train") != path_identity(root / "ali/mono")


def steps(*args: str, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "asr_kd.steps", *args], capture_output=True, text=True, env=env,
                          check=check)


def test_recipe_marker_redoes_a_step_whose_options_or_inputs_changed(root):
    marker = root / "exp/.done/train_dnn"
    cmd = ["kd", "train", str(root / "feats/train"), str(root / "ali/train"), "--set", "model.hidden_dim=64",
           str(root / "exp/dnn")]
    bigger = [c.replace("=64", "=512") for c in cmd]
    (root / "exp/dnn").mkdir(parents=True)  # the step's output
    assert steps("begin", str(marker), "--", *cmd).stdout.strip() == "run"
    assert not marker.exists()  # a marker only for a finished step
    assert steps("check", str(marker), "--", *cmd).stdout.strip() == "run"  # started, not finished: resume
    assert steps("check", str(marker), "--", *bigger).stdout.strip().startswith("redo: command line changed")
    steps("finish", str(marker), "12")
    assert steps("check", str(marker), "--", *cmd).stdout.strip() == "done"
    assert steps("check", str(marker), "--", *cmd[:2], "--nj", "4", *cmd[2:]).stdout.strip() == "done"  # where, not what
    # before: `[done] train_dnn` and a 2 x 64 model for --hidden-dim 512
    state = steps("check", str(marker), "--", *bigger).stdout.strip()
    assert state == "redo: command line changed: model.hidden_dim=64 -> model.hidden_dim=512"
    (root / "ali/train/priors.npy").write_bytes(np.full(NUM_PDFS, 0.25).tobytes())  # other input content
    state = steps("check", str(marker), "--", *cmd).stdout.strip()
    assert state.startswith(f"redo: input {root / 'ali/train'}") and "content changed" in state
    steps("begin", str(marker), "--", *cmd)
    steps("finish", str(marker), "12")
    assert steps("check", str(marker), "--", *cmd).stdout.strip() == "done"
    (root / "exp/dnn").rmdir()  # removed with the dir of another step (a graph inside a GMM dir that was retrained)
    assert steps("check", str(marker), "--", *cmd).stdout.strip() == f"redo: its output {root / 'exp/dnn'} is gone"
    (root / "exp/dnn").mkdir()
    legacy = root / "exp/.done/legacy"
    legacy.write_text("37\n")  # a marker of the older recipe: a bare duration
    assert steps("check", str(legacy), "--", *cmd).stdout.strip() == "redo: its marker predates step fingerprints"
    # the same exp under another root (copied, run with its new --exp): still done
    moved = root / "moved"
    shutil.copytree(root / "exp", moved / "exp")
    shutil.copytree(root / "ali", moved / "ali")  # (priors changed above: the recorded run is redone)
    shutil.copytree(root / "feats", moved / "feats")
    moved_cmd = [c.replace(str(root), str(moved)) for c in cmd]
    shutil.copy(marker, moved / "exp/.done/train_dnn")  # recorded without an alias: the paths differ
    assert steps("check", str(moved / "exp/.done/train_dnn"), "--alias", f"exp={moved}", "--",
                 *moved_cmd).stdout.strip().startswith(f"redo: command line changed: {root}/feats/train")
    steps("begin", str(marker), "--alias", f"exp={root}", "--", *cmd)
    steps("finish", str(marker), "12")
    shutil.copy(marker, moved / "exp/.done/train_dnn")
    assert steps("check", str(moved / "exp/.done/train_dnn"), "--alias", f"exp={moved}", "--",
                 *moved_cmd).stdout.strip() == "done"


def test_decode_without_text_removes_scores_of_an_earlier_decode(tmp_path):
    from argparse import Namespace

    from asr_kd.decode.commands import _write_results

    out = tmp_path / "decode_test"
    out.mkdir()
    for name in ("wer.json", "ref.txt", "per_utt.txt"):
        (out / name).write_text("from the earlier decode\n")
    stats = Namespace(real_time_factor=0.1)
    _write_results(Namespace(text=None, out_dir=str(out)), {"u1": ["A", "B"]}, {"acoustic_scale": 0.1}, stats)
    assert (out / "hyp.txt").read_text() == "u1 A B\n"
    assert sorted(p.name for p in out.iterdir()) == ["decode.json", "hyp.txt"]


# ------------------------------------------------------------------ two writers
def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_second_writer_is_refused_naming_the_first(root, capsys, caplog):
    out = root / "dnn"
    holder = sleeper()
    try:
        OutputLock(lock_path_of(out), "output", pid=holder.pid, command="asr-kd train ... (the first)").acquire()
        # before: both ran, epochs 1,1,2,2,3,3 in one metrics.jsonl
        assert main(train_args(root, out)) == 1
        err = capsys.readouterr().err
        assert f"in use by PID {holder.pid} (asr-kd train ... (the first))" in err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its lock is taken over with a notice
    assert main(train_args(root, out)) == 0
    assert f"taking over the lock of train output {out} left by PID {holder.pid}" in caplog.text
    assert (out / "final.pt").is_file() and not lock_path_of(out).exists()


def test_recipe_lock_refuses_a_second_run_and_takes_over_a_dead_ones(tmp_path):
    lock = tmp_path / "exp/.lock"
    first, second = sleeper(), sleeper()
    try:
        steps("lock", str(lock), "--pid", str(first.pid))
        refused = steps("lock", str(lock), "--pid", str(second.pid), check=False)
        assert refused.returncode == 1
        assert f"exp dir {tmp_path / 'exp'} is in use by PID {first.pid} ({sys.executable} -c import time" \
            in refused.stderr
        first.kill()
        first.wait()
        taken = steps("lock", str(lock), "--pid", str(second.pid))
        assert f"left by PID {first.pid}" in taken.stderr
        assert json.loads(lock.read_text())["pid"] == second.pid
        steps("unlock", str(lock), "--pid", str(second.pid))
        assert not lock.exists()
    finally:
        for p in (first, second):
            p.kill()
            p.wait()


def test_child_dies_with_its_recipe_on_kill_9(tmp_path):
    pid_file = tmp_path / "child.pid"
    child = (f"from asr_kd.steps.lock import die_with_parent; die_with_parent(); import os, time; "
             f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)")
    # `; true` keeps bash from exec'ing the child: bash stays its parent, as run.sh is
    shell = subprocess.Popen(["bash", "-c", f'ASR_KD_PARENT_PID=$BASHPID "{sys.executable}" -c "{child}"; true'],
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline, "child did not start"
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    os.kill(shell.pid, signal.SIGKILL)
    shell.wait()
    deadline = time.time() + 10
    while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        assert time.time() < deadline, "child outlived its killed parent (orphan)"
        time.sleep(0.1)


# ------------------------------------------------------------------ pdfs matched by count only
def test_train_refuses_alignments_of_two_trees(root, capsys):
    # before: a monophone alignment with the tri1 pdf count was accepted
    assert main(train_args(root, root / "dnn", dev_ali="mono")) == 1
    err = capsys.readouterr().err
    assert f"alignment {root / 'ali/train'} has tree {TREE_A[:16]}" in err
    assert f"dev alignment {root / 'ali/mono'} has tree {TREE_B[:16]}" in err


def test_model_records_its_tree_and_consumers_refuse_another(root, capsys):
    model = root / "dnn"
    assert main(train_args(root, model)) == 0
    assert spec_of(model)["tree_sha256"] == TREE_A
    assert main(["eval-frames", str(model), str(root / "feats/train"), str(root / "ali/mono")]) == 1
    err = capsys.readouterr().err
    assert f"model {model / 'final.pt'} has tree {TREE_A[:16]}" in err and f"alignment {root / 'ali/mono'}" in err
    assert main(["compute-loglikes", str(model), str(root / "feats/dev"), str(root / "ali/mono"),
                 str(root / "ll_bad")]) == 1
    assert f"priors {root / 'ali/mono'} has tree {TREE_B[:16]}" in capsys.readouterr().err
    assert main(["compute-loglikes", str(model), str(root / "feats/dev"), str(root / "ali/train"),
                 str(root / "ll")]) == 0
    assert json.loads((root / "ll/meta.json").read_text())["tree_sha256"] == TREE_A
    gmm = root / "mono_gmm"  # a GMM dir whose tree is not the model's: decode refuses before decoding
    gmm.mkdir()
    (gmm / "tree").write_bytes(b"another tree")
    assert main(["decode", str(root / "graph"), str(gmm), str(root / "decode"), "--loglikes", str(root / "ll")]) == 1
    err = capsys.readouterr().err
    assert f"model dir {gmm} has tree" in err and f"log-likelihoods {root / 'll'} has tree {TREE_A[:16]}" in err
    assert not (root / "decode").exists()


def test_distill_refuses_a_teacher_of_another_tree(root, capsys):
    spec = ModelSpec(ModelConfig(hidden_layers=1, hidden_dim=8), DIM, 1, 1, NUM_PDFS, tree_sha256=TREE_B)
    save_final(root / "teacher" / "final.pt", init_model(spec, 1).state_dict(), spec)
    args = ["distill", str(root / "feats/train"), str(root / "ali/train"), str(root / "feats/dev"),
            str(root / "ali/dev"), str(root / "student"), "--teacher", str(root / "teacher"),
            "--set", "student.model.hidden_layers=1", "--set", "student.model.hidden_dim=8",
            "--set", "student.max_epochs=1", "--set", "student.device=cpu"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"teacher model {root / 'teacher/final.pt'} has tree {TREE_B[:16]}" in err
    assert main(["cache-teacher", str(root / "teacher"), "--feats", str(root / "feats/train"),
                 "--out", str(root / "cache"), "--combination", "geo"]) == 0
    assert json.loads((root / "cache/meta.json").read_text())["tree_sha256"] == TREE_B


def test_legacy_alignment_without_tree_is_accepted_with_a_warning(root, caplog):
    assert main(train_args(root, root / "dnn", train="legacy")) == 0
    assert any("records no tree checksum" in r.message and "legacy" in r.message for r in caplog.records)
    assert spec_of(root / "dnn")["tree_sha256"] == TREE_A  # the dev alignment's tree


def test_alignment_store_records_the_tree(tmp_path):
    from asr_kd.align.alignment import write_alignment_store
    from asr_kd.data.store import RaggedStore
    from asr_kd.io import sha256_file

    feats = write_store(tmp_path / "feats", [("u1", np.zeros((3, 2), np.float32))])
    tree = tmp_path / "tree"
    tree.write_bytes(b"a tree")
    write_alignment_store(tmp_path / "ali", {"u1": {"pdfs": np.array([0, 1, 1], np.int32)}}, num_pdfs=2, feats=feats,
                          model_path=None, source="kaldi", tree_path=tree)
    assert RaggedStore(tmp_path / "ali").meta["tree_sha256"] == sha256_file(tree)


def test_report_reads_step_seconds_from_fingerprinted_markers(tmp_path):
    from asr_kd.report.report import _step_seconds

    marker = tmp_path / ".done/train_dnn"
    steps("begin", str(marker), "--", "kd", "train", str(tmp_path / "dnn"))
    (tmp_path / "dnn").mkdir()
    steps("finish", str(marker), "42")
    (tmp_path / ".done/old_step").write_text("7\n")
    steps("begin", str(tmp_path / ".done/running"), "--", "kd", "train", str(tmp_path / "other"))
    assert _step_seconds(tmp_path / ".done") == {"old_step": 7, "train_dnn": 42}

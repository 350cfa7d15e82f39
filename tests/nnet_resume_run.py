"""Run by test_nnet_train/test_nnet_stream: train on the synthetic set; NNET_SLOW=1 sleeps per step so
it can be killed; NNET_BUDGET=N streams the sets with a resident budget of N frames; NNET_MAX_STEPS=N
caps each epoch at N steps."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from asr_kd.nnet.stream import open_frames
from asr_kd.nnet.train import TrainConfig, hard_ce, train_frame_classifier


def slow_ce(logits, batch):
    if os.environ.get("NNET_SLOW"):
        time.sleep(0.03)
    return hard_ce(logits[None], batch.y[None])


def resume_config() -> TrainConfig:
    cfg = TrainConfig(max_epochs=4, batch_size=32, lr=0.05, device="cpu", keep_checkpoints=1)
    cfg.data.max_resident_frames = int(os.environ.get("NNET_BUDGET", 0)) or "auto"
    cfg.max_steps_per_epoch = int(os.environ.get("NNET_MAX_STEPS", 0))
    cfg.model.hidden_dim, cfg.model.dropout = 16, 0.2  # dropout: the torch RNG state must be restored too
    return cfg


def launch(synth: Path, exp: Path, *, slow: bool = False, budget: int | None = None,
           max_steps: int = 0) -> subprocess.Popen:
    """This script in a fresh process (one thread), optionally slowed down and/or streamed."""
    here = Path(__file__).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{here.parent}{os.pathsep}{here}"}
    for name in ("NNET_SLOW", "NNET_BUDGET", "NNET_MAX_STEPS"):
        env.pop(name, None)
    if max_steps:
        env["NNET_MAX_STEPS"] = str(max_steps)
    if slow:
        env["NNET_SLOW"] = "1"
    if budget:
        env["NNET_BUDGET"] = str(budget)
    return subprocess.Popen([sys.executable, __file__, str(synth), str(exp)], env=env)


def kill_9_after_epoch_2(synth: Path, exp: Path, budget: int | None = None, max_steps: int = 0) -> None:
    """Start a slow run, SIGKILL it once epoch 2's checkpoint exists, check it died mid-training."""
    victim = launch(synth, exp, slow=True, budget=budget, max_steps=max_steps)
    ckpt = exp / "checkpoints/epoch_2.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert ckpt.exists() and not (exp / "final.pt").exists(), "killed too late or never checkpointed"


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    """final.pt and the last checkpoint of two runs hold bit-identical tensors."""
    for name in ("final.pt", "checkpoints/epoch_4.pt"):
        a = torch.load(a_dir / name, weights_only=False)
        b = torch.load(b_dir / name, weights_only=False)
        sa, sb = a.get("state_dict", a.get("model")), b.get("state_dict", b.get("model"))
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


if __name__ == "__main__":
    root, exp = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    budget = resume_config().data.max_resident_frames
    train = open_frames(root / "train_feats", root / "train_ali", budget=budget)
    dev = open_frames(root / "dev_feats", root / "dev_ali", budget=budget)
    train_frame_classifier(resume_config(), train, dev, loss_fn=slow_ce, exp_dir=exp)

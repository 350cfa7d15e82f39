"""Run by test_nnet_train/test_nnet_stream: train on the synthetic set; NNET_SLOW=1 sleeps per step so
it can be killed; NNET_BUDGET=N streams the sets with a resident budget of N frames."""
import os
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
    cfg.model.hidden_dim, cfg.model.dropout = 16, 0.2  # dropout: the torch RNG state must be restored too
    return cfg


if __name__ == "__main__":
    root, exp = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    budget = resume_config().data.max_resident_frames
    train = open_frames(root / "train_feats", root / "train_ali", budget=budget)
    dev = open_frames(root / "dev_feats", root / "dev_ali", budget=budget)
    train_frame_classifier(resume_config(), train, dev, loss_fn=slow_ce, exp_dir=exp)

"""Run by test_nnet_train: train on the synthetic set; NNET_SLOW=1 sleeps per step so it can be killed."""
import os
import sys
import time
from pathlib import Path

import torch

from asr_kd.nnet.frames import FrameData
from asr_kd.nnet.train import TrainConfig, hard_ce, train_frame_classifier


def slow_ce(logits, batch):
    if os.environ.get("NNET_SLOW"):
        time.sleep(0.03)
    return hard_ce(logits[None], batch.y[None])


def resume_config() -> TrainConfig:
    cfg = TrainConfig(max_epochs=4, batch_size=32, lr=0.05, device="cpu", keep_checkpoints=1)
    cfg.model.hidden_dim, cfg.model.dropout = 16, 0.2  # dropout: the torch RNG state must be restored too
    return cfg


if __name__ == "__main__":
    root, exp = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    train = FrameData.load(root / "train_feats", root / "train_ali")
    dev = FrameData.load(root / "dev_feats", root / "dev_ali")
    train_frame_classifier(resume_config(), train, dev, loss_fn=slow_ce, exp_dir=exp)

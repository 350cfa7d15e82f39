"""Experiment dirs: every run records its resolved config, command, environment and logs.

    exp = ExpDir.create("exp/dnn_seed1", cfg)     # writes config.yaml, command.txt, env.json, log/
    exp.log_metrics({"epoch": 1, "dev_acc": 0.61}) # appends to metrics.jsonl
"""
from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

from asr_kd.config import save_config
from asr_kd.io import write_json


class ExpDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        (self.path / "log").mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, path: str | Path, cfg=None, log_name: str = "run") -> "ExpDir":
        exp = cls(path)
        if cfg is not None:
            save_config(cfg, exp.path / "config.yaml")
        (exp.path / "command.txt").write_text(" ".join(sys.argv) + "\n", encoding="utf-8")
        write_json(exp.path / "env.json", environment())
        exp.add_log_file(log_name)
        return exp

    def add_log_file(self, name: str) -> None:
        """Mirror the `asr_kd` logger into log/<name>.log (appending, so a resumed run keeps history)."""
        handler = logging.FileHandler(self.path / "log" / f"{name}.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("asr_kd")
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)

    def log_metrics(self, record: dict, name: str = "metrics.jsonl") -> None:
        with open(self.path / name, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": time.time(), **record}) + "\n")


def environment() -> dict:
    """Versions, git commit and device: enough to know what produced a result."""
    env = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = ""
    try:
        import torch

        env["torch"] = torch.__version__
        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}"
    except ImportError:
        pass
    return env


SYSTEM_KINDS = ("gmm", "dnn", "ensemble", "student")


def write_system(path: str | Path, kind: str, **fields) -> Path:
    """`<path>/system.json`: what this dir's system is (kind, teacher, T, seed, sizes), written by the stage
    that made it, so the report reads what a system is instead of guessing it from the directory name."""
    if kind not in SYSTEM_KINDS:
        raise ValueError(f"system kind {kind!r} not in {SYSTEM_KINDS}")
    out = Path(path) / "system.json"
    write_json(out, {"kind": kind, **fields})
    return out

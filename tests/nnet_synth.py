"""Synthetic feature + alignment stores for the nnet tests: separable classes in label runs."""
from pathlib import Path

import numpy as np

from asr_kd.data.store import write_store
from asr_kd.io import write_json


def make_sets(root: Path, *, num_utts=12, num_pdfs=4, dim=5, seed=0, noise=0.5, min_len=3, max_len=40,
              name="train"):
    """Write root/<name>_feats and root/<name>_ali; return their paths."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(123).normal(scale=2.0, size=(num_pdfs, dim))
    feats, alis = [], []
    for u in range(num_utts):
        n = int(rng.integers(min_len, max_len + 1))
        labels = np.repeat(rng.integers(0, num_pdfs, size=n), rng.integers(2, 6, size=n))[:n]
        feats.append((f"{name}{u:03d}", means[labels] + noise * rng.normal(size=(n, dim))))
        alis.append((f"{name}{u:03d}", labels.astype(np.int32)))
    feat_dir, ali_dir = root / f"{name}_feats", root / f"{name}_ali"
    write_store(feat_dir, feats, meta={"dim": dim, "config_hash": "synthetic"}, dtype="float32")
    write_store(ali_dir, alis, meta={"num_pdfs": num_pdfs}, dtype="int32")
    counts = np.bincount(np.concatenate([a for _, a in alis]), minlength=num_pdfs) + 1e-3
    np.save(ali_dir / "priors.npy", counts / counts.sum())
    return feat_dir, ali_dir

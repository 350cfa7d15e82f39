"""The parts of GMM-HMM training shared by mono.py and tri.py: one EM pass, checkpoints, resume.

Each finished pass x writes `x+1.mdl` (atomically); the alignment in use is saved as `ali.npz`
after each realignment, so a killed run restarts at the last finished pass. A dir holding a run
of another config is refused rather than mixed.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr_kd.align.alignment import AlignConfig, align_set
from asr_kd.config import load_config
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError
from asr_kd.expdir import ExpDir
from asr_kd.io import atomic_path
from asr_kd.kaldi import gmm

log = logging.getLogger(__name__)


def already_trained(out_dir: str | Path, cfg) -> bool:
    """True if `out_dir` holds a finished run of this config; an error if it holds another config's run.

    A restarted run with the same config resumes from its checkpoints; mixing configs is refused.
    """
    out = Path(out_dir)
    if not any(out.glob("*.mdl")):
        return False
    saved = out / "config.yaml"
    if not saved.is_file() or load_config(type(cfg), saved) != cfg:
        raise AsrKdError(f"{out}: holds models from another configuration (see {saved}); "
                         f"remove the dir or choose a new one")
    if (out / "final.mdl").is_file():
        log.info("%s: already trained (final.mdl exists); remove it to retrain", out)
        return True
    return False


def usable_texts(texts: dict[str, str], feats: RaggedStore) -> dict[str, str]:
    """Transcripts of utterances that have features (others are logged and skipped)."""
    missing = [u for u in texts if u not in feats]
    if missing:
        log.warning("%d utterances have a transcript but no features in %s (e.g. %s); skipped",
                    len(missing), feats.path, missing[0])
    kept = {u: t for u, t in sorted(texts.items()) if u in feats}
    if not kept:
        raise AsrKdError(f"no utterance of the transcripts has features in {feats.path}")
    return kept


def em_pass(x: int, am, tm, tree, feats: RaggedStore, ali: dict, exp: ExpDir, *, mixup: int,
            power: float, min_gaussian_occupancy: float = 10.0):
    """One gmm-acc-stats-ali + gmm-est pass; writes `x+1.mdl`. Returns the new (tm, am)."""
    table = gmm.TransitionTable(tm, tree)
    accs, trans_accs = gmm.new_accs(am, tm)
    for utt, tids in ali.items():
        gmm.accumulate_ali(accs, trans_accs, am, tm, table, feats[utt], tids)
    stats = gmm.estimate(am, tm, accs, trans_accs, mixup=mixup, power=power,
                         min_gaussian_occupancy=min_gaussian_occupancy)
    gmm.write_model(exp.path / f"{x + 1}.mdl", tm, am, tree)
    log.info("pass %d: avg loglike %.4f over %d frames, %d Gaussians", x, stats["avg_loglike"],
             stats["frames"], stats["num_gauss"])
    exp.log_metrics({"pass": x, **stats})
    return tm, am


def save_alignment(path: Path, ali: dict[str, np.ndarray], x: int) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, __pass__=np.array(x), **ali)


def load_alignment(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "__pass__"}


def resume(out: Path, tree, num_iters: int):
    """(first pass to run, tm, am, alignment) from the checkpoints in `out`; None if none."""
    done = sorted(int(p.stem) for p in out.glob("*.mdl") if p.stem.isdigit() and int(p.stem) >= 1)
    if not done or not (out / "ali.npz").is_file():
        return None
    last = min(done[-1], num_iters)
    tm, am = gmm.read_model(out / f"{last}.mdl", tree)
    log.info("resuming at pass %d from %s/%d.mdl", last, out, last)
    return last, tm, am, load_alignment(out / "ali.npz")


def run_passes(exp: ExpDir, am, tm, tree, graphs: dict, feats: RaggedStore, ali: dict, *, start: int,
               num_iters: int, realign_iters: list[int], align: AlignConfig, num_gauss: int, inc_gauss: int,
               max_iter_inc: int, power: float, desc: str):
    """Passes start .. num_iters-1 (realign, accumulate, re-estimate, mix up), then `final.mdl`.

    `num_gauss` is the Gaussian target of pass `start`; it grows by `inc_gauss` up to pass `max_iter_inc`.
    """
    for x in tqdm(range(start, num_iters), desc=desc, unit="pass", initial=start, total=num_iters):
        if x in realign_iters:
            ali, failed, like = align_set(am, tm, graphs, feats, align, desc=f"align pass {x}")
            save_alignment(exp.path / "ali.npz", ali, x)
            exp.log_metrics({"pass": x, "align_avg_loglike": like, "align_failed": len(failed)})
        tm, am = em_pass(x, am, tm, tree, feats, ali, exp, mixup=num_gauss, power=power)
        if x <= max_iter_inc:
            num_gauss += inc_gauss
    shutil.copyfile(exp.path / f"{num_iters}.mdl", exp.path / "final.mdl")
    return tm, am

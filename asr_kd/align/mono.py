"""Flat-start monophone GMM-HMM training (Kaldi's steps/train_mono.sh), resumable per iteration.

    0.mdl: one Gaussian per pdf at the global feature mean/variance; equal alignment.
    pass x = 1 .. num_iters-1: realign if x in realign_iters, accumulate, re-estimate, mix up.
Each finished pass writes `x+1.mdl` (atomically); the alignment in use is saved after each realign
(`ali.npz`), so a killed run restarts at the last finished pass.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr_kd.align.alignment import AlignConfig, align_set
from asr_kd.align.graphs import Lang, compile_graphs, load_lang
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError
from asr_kd.expdir import ExpDir
from asr_kd.io import atomic_path
from asr_kd.kaldi import gmm

log = logging.getLogger(__name__)

KALDI_MONO_REALIGN = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38]


@dataclass
class MonoConfig:
    num_iters: int = 40
    max_iter_inc: int = 30          # passes over which Gaussians grow linearly to tot_gauss
    tot_gauss: int = 1000
    power: float = 0.25             # exponent of occupancy when sharing Gaussians among pdfs
    realign_iters: list[int] = field(default_factory=lambda: list(KALDI_MONO_REALIGN))
    align: AlignConfig = field(default_factory=lambda: AlignConfig(beam=6.0, retry_beam=24.0))


def train_mono(feats: RaggedStore | str | Path, texts: dict[str, str], lang_dir: str | Path,
               out_dir: str | Path, cfg: MonoConfig | None = None) -> Path:
    """Train a monophone system into `out_dir` (final.mdl, tree, N.mdl, log/). Returns out_dir."""
    cfg = cfg or MonoConfig()
    feats = feats if isinstance(feats, RaggedStore) else RaggedStore(feats)
    lang = load_lang(lang_dir)
    texts = usable_texts(texts, feats)
    exp = ExpDir.create(out_dir, cfg, log_name="train_mono")
    out = exp.path
    tree, tm, am = init_model(lang, feats, texts)
    gmm.write_tree(out / "tree", tree)
    graphs = compile_graphs(lang, tm, tree, texts)
    start, ali = 0, None
    if (resumed := resume(out, tree, cfg.num_iters)) is not None:
        start, tm, am, ali = resumed
    if start == 0:
        ali = equal_alignment(graphs, feats)
        save_alignment(out / "ali.npz", ali, 0)
        gmm.write_model(out / "0.mdl", tm, am, tree)
        tm, am = em_pass(0, am, tm, tree, feats, ali, exp, mixup=0, min_gaussian_occupancy=3.0, power=cfg.power)
        start = 1
    num_gauss, inc_gauss = gauss_schedule(am, cfg, start)
    started = time.time()
    for x in tqdm(range(start, cfg.num_iters), desc="train_mono", unit="pass", initial=start, total=cfg.num_iters):
        if x in cfg.realign_iters:
            ali, failed, like = align_set(am, tm, graphs, feats, cfg.align, desc=f"align pass {x}")
            save_alignment(out / "ali.npz", ali, x)
            exp.log_metrics({"pass": x, "align_avg_loglike": like, "align_failed": len(failed)})
        tm, am = em_pass(x, am, tm, tree, feats, ali, exp, mixup=num_gauss, power=cfg.power)
        if x <= cfg.max_iter_inc:
            num_gauss += inc_gauss
    shutil.copyfile(out / f"{cfg.num_iters}.mdl", out / "final.mdl")
    log.info("train_mono: done in %.1f s: %d pdfs, %d Gaussians -> %s/final.mdl",
             time.time() - started, am.num_pdfs, am.num_gauss, out)
    return out


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


def init_model(lang: Lang, feats: RaggedStore, texts: dict[str, str]):
    """gmm-init-mono from the global mean/variance of the training features."""
    x = np.concatenate([np.asarray(feats[u], np.float64) for u in texts])
    return gmm.init_mono(lang.topo, x.mean(0), np.maximum(x.var(0), 1e-4), lang.shared_phones or None)


def equal_alignment(graphs: dict, feats: RaggedStore) -> dict[str, np.ndarray]:
    """align-equal-compiled over the set; utterances too short for their transcript are dropped."""
    ali, failed = {}, []
    for utt, graph in graphs.items():
        tids = gmm.equal_align(graph, feats.num_rows(utt))
        if tids is None:
            failed.append(utt)
        else:
            ali[utt] = tids
    if failed:
        log.warning("equal alignment failed for %d utterances (too few frames?): %s", len(failed), " ".join(failed[:20]))
    return ali


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


def gauss_schedule(am, cfg: MonoConfig, start: int) -> tuple[int, int]:
    """(Gaussian target for pass `start`, increment per pass), as train_mono.sh computes them."""
    inc = max((cfg.tot_gauss - am.num_pdfs) // cfg.max_iter_inc, 0)
    return am.num_pdfs + inc * min(start - 1, cfg.max_iter_inc), inc


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

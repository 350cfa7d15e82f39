"""Flat-start monophone GMM-HMM training (Kaldi's steps/train_mono.sh), resumable per iteration.

    subset: the `num_utts` shortest utterances (Kaldi's LibriSpeech recipe: 2000; all if fewer).
    0.mdl: one Gaussian per pdf at the global feature mean/variance; equal alignment.
    pass x = 1 .. num_iters-1: realign if x in realign_iters, accumulate, re-estimate, mix up.
Checkpointing, sharding and the EM pass itself are shared with tri.py (em.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_kd.align.alignment import AlignConfig, ModelPaths, UttText, shard_graphs
from asr_kd.align.em import Run, already_trained, em_pass, resume, run_passes, save_alignment, subset, usable_texts
from asr_kd.align.gmm_stats import Moments, moments
from asr_kd.align.gmm_update import UpdateOptions
from asr_kd.align.graphs import load_lang
from asr_kd.config import require
from asr_kd.data.store import RaggedStore
from asr_kd.expdir import ExpDir
from asr_kd.kaldi import gmm
from asr_kd.parallel import Jobs, held_pool, run_shards

log = logging.getLogger(__name__)

KALDI_MONO_REALIGN = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38]


@dataclass
class MonoConfig:
    num_iters: int = 40
    max_iter_inc: int = 30          # passes over which Gaussians grow linearly to tot_gauss
    tot_gauss: int = 1000
    power: float = 0.25             # exponent of occupancy when sharing Gaussians among pdfs
    num_utts: int = 2000            # train on the N shortest utterances (Kaldi's train_2kshort); <= 0: all
    seed: int = 0                   # seeds Gaussian splitting (mixing up)
    realign_iters: list[int] = field(default_factory=lambda: list(KALDI_MONO_REALIGN))
    align: AlignConfig = field(default_factory=lambda: AlignConfig(beam=6.0, retry_beam=24.0))

    def __post_init__(self):
        require(self.num_iters >= 1 and self.tot_gauss >= 1 and self.max_iter_inc >= 0,
                f"need num_iters >= 1, tot_gauss >= 1, max_iter_inc >= 0; got {self.num_iters}, {self.tot_gauss}, "
                f"{self.max_iter_inc}")


def train_mono(feats: RaggedStore | str | Path, texts: dict[str, str], lang_dir: str | Path,
               out_dir: str | Path, cfg: MonoConfig | None = None, jobs: Jobs = Jobs()) -> Path:
    """Train a monophone system into `out_dir` (final.mdl, tree, N.mdl, log/). Returns out_dir."""
    with held_pool(jobs):  # one process pool for all ~40 passes
        return _train_mono(feats, texts, lang_dir, out_dir, cfg, jobs)


def _train_mono(feats: RaggedStore | str | Path, texts: dict[str, str], lang_dir: str | Path,
                out_dir: str | Path, cfg: MonoConfig | None, jobs: Jobs) -> Path:
    cfg = cfg or MonoConfig()
    feats = feats if isinstance(feats, RaggedStore) else RaggedStore(feats)
    lang = load_lang(lang_dir)
    texts = subset(usable_texts(texts, feats), feats, cfg.num_utts, "shortest")
    if already_trained(out_dir, cfg):
        return Path(out_dir)
    exp = ExpDir.create(out_dir, cfg, log_name="train_mono")
    out = exp.path
    started = time.time()
    run = Run.create(exp, None, lang.path, feats, texts, cfg.align, jobs, cfg.seed, "0.mdl")
    tree, tm, am = init_model(lang, run)
    gmm.write_tree(out / "tree", tree)
    run.tree = tree
    update = UpdateOptions(power=cfg.power)
    start = 0
    if (resumed := resume(out, tree, cfg.num_iters)) is not None:
        start, tm, am = resumed
    if start == 0:
        gmm.write_model(out / "0.mdl", tm, am, tree)
        save_alignment(out / "ali", equal_alignment(run), 0)
        tm, am = em_pass(0, am, tm, run, mixup=0, opts=UpdateOptions(power=cfg.power, min_gaussian_occupancy=3.0))
        start = 1
    num_gauss, inc_gauss = gauss_schedule(am, cfg, start)
    tm, am = run_passes(run, am, tm, start=start, num_iters=cfg.num_iters, realign_iters=cfg.realign_iters,
                        align=cfg.align, num_gauss=num_gauss, inc_gauss=inc_gauss, max_iter_inc=cfg.max_iter_inc,
                        opts=update, desc="train_mono")
    log.info("train_mono: done in %.1f s: %d pdfs, %d Gaussians -> %s/final.mdl",
             time.time() - started, am.num_pdfs, am.num_gauss, out)
    return out


def moments_shard(items: list[UttText], feats_path: str) -> Moments:
    feats = RaggedStore(feats_path)
    return moments(feats[utt] for utt, _ in items)


def init_model(lang, run: Run):
    """gmm-init-mono from the global mean/variance of the training features (summed shard by shard)."""
    parts = run_shards(moments_shard, run.shards, run.jobs, str(run.feats.path), desc="feature moments")
    total = parts[0]
    for part in parts[1:]:
        total = total.add(part)
    mean, var = total.mean_var()
    return gmm.init_mono(lang.topo, mean, var, lang.shared_phones or None)


def equal_alignment_shard(items: list[UttText], paths: ModelPaths) -> tuple[dict[str, np.ndarray], list[str]]:
    graphs, feats = shard_graphs(items, paths), RaggedStore(paths.feats)
    ali, failed = {}, []
    for utt, _ in items:
        tids = gmm.equal_align(graphs[utt], feats.num_rows(utt), utt)
        if tids is None:
            failed.append(utt)
        else:
            ali[utt] = tids
    return ali, failed


def equal_alignment(run: Run) -> dict[str, np.ndarray]:
    """align-equal-compiled over the set; utterances too short for their transcript are dropped."""
    ali, failed = {}, []
    for part, part_failed in run_shards(equal_alignment_shard, run.shards, run.jobs, run.paths("0.mdl"),
                                        desc="equal alignment"):
        ali.update(part)
        failed += part_failed
    if failed:
        log.warning("equal alignment failed for %d utterances (too few frames?): %s", len(failed), " ".join(failed[:20]))
    return ali


def gauss_schedule(am, cfg: MonoConfig, start: int) -> tuple[int, int]:
    """(Gaussian target for pass `start`, increment per pass), as train_mono.sh computes them."""
    inc = max((cfg.tot_gauss - am.num_pdfs) // cfg.max_iter_inc, 0)
    return am.num_pdfs + inc * min(start - 1, cfg.max_iter_inc), inc

"""Flat-start monophone GMM-HMM training (Kaldi's steps/train_mono.sh), resumable per iteration.

    0.mdl: one Gaussian per pdf at the global feature mean/variance; equal alignment.
    pass x = 1 .. num_iters-1: realign if x in realign_iters, accumulate, re-estimate, mix up.
Checkpointing and the EM pass itself are shared with tri.py (em.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_kd.align.alignment import AlignConfig
from asr_kd.align.em import already_trained, em_pass, resume, run_passes, save_alignment, usable_texts
from asr_kd.align.graphs import Lang, compile_graphs, load_lang
from asr_kd.data.store import RaggedStore
from asr_kd.expdir import ExpDir
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
    if already_trained(out_dir, cfg):
        return Path(out_dir)
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
    tm, am = run_passes(exp, am, tm, tree, graphs, feats, ali, start=start, num_iters=cfg.num_iters,
                        realign_iters=cfg.realign_iters, align=cfg.align, num_gauss=num_gauss, inc_gauss=inc_gauss,
                        max_iter_inc=cfg.max_iter_inc, power=cfg.power, desc="train_mono")
    log.info("train_mono: done in %.1f s: %d pdfs, %d Gaussians -> %s/final.mdl",
             time.time() - started, am.num_pdfs, am.num_gauss, out)
    return out


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


def gauss_schedule(am, cfg: MonoConfig, start: int) -> tuple[int, int]:
    """(Gaussian target for pass `start`, increment per pass), as train_mono.sh computes them."""
    inc = max((cfg.tot_gauss - am.num_pdfs) // cfg.max_iter_inc, 0)
    return am.num_pdfs + inc * min(start - 1, cfg.max_iter_inc), inc

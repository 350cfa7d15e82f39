"""Tied-state triphone GMM-HMM training from an existing alignment (Kaldi's steps/train_deltas.sh).

    subset: `num_utts` utterances spread over the set (Kaldi's LibriSpeech tri1: train_5k; all if fewer)
    -> tree stats from the alignment, shard by shard -> questions -> tree (num_leaves) -> one
    Gaussian per leaf from the stats -> convert the alignment to the new tree -> EM passes with
    realignment, mixing up linearly to tot_gauss.
Checkpoints, sharding and resume as in mono.py (em.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_kd.align import tree as treelib
from asr_kd.align.alignment import AlignConfig, UttText, phone_starts
from asr_kd.align.em import Run, already_trained, resume, run_passes, save_alignment, subset, usable_texts
from asr_kd.align.gmm_update import UpdateOptions
from asr_kd.align.graphs import Lang, load_lang, read_int_sets
from asr_kd.data.feature_view import open_feats
from asr_kd.data.store import RaggedStore
from asr_kd.config import require
from asr_kd.errors import AsrKdError
from asr_kd.expdir import ExpDir
from asr_kd.kaldi import gmm
from asr_kd.parallel import Jobs, held_pool, run_shards

log = logging.getLogger(__name__)


@dataclass
class TriConfig:
    num_leaves: int = 500
    tot_gauss: int = 4000
    num_iters: int = 35
    max_iter_inc: int = 25
    power: float = 0.25
    realign_iters: list[int] = field(default_factory=lambda: [10, 20, 30])
    min_leaf_count: float = 100.0     # frames each side of a tree split must keep
    num_utts: int = 5000              # train on N utterances spread over the set (Kaldi's train_5k); <= 0: all
    seed: int = 0                     # seeds Gaussian splitting (mixing up)
    align: AlignConfig = field(default_factory=AlignConfig)

    def __post_init__(self):
        require(self.num_leaves >= 1 and self.tot_gauss >= self.num_leaves,
                f"need num_leaves >= 1 and tot_gauss >= num_leaves (one Gaussian per leaf at least); "
                f"got {self.num_leaves}, {self.tot_gauss}")
        require(self.num_iters >= 1 and self.max_iter_inc >= 0 and self.min_leaf_count > 0,
                f"need num_iters >= 1, max_iter_inc >= 0, min_leaf_count > 0; got {self.num_iters}, "
                f"{self.max_iter_inc}, {self.min_leaf_count}")


def train_tri(feats: RaggedStore | str | Path, texts: dict[str, str], lang_dir: str | Path, ali_dir: str | Path,
              out_dir: str | Path, cfg: TriConfig | None = None, jobs: Jobs = Jobs(), adapt=None) -> Path:
    """Train a triphone system into `out_dir` (final.mdl, tree, N.mdl, log/) from `ali_dir`. Returns out_dir.

    `adapt` (LDA+MLLT or SAT training, see lda_mllt.py / sat.py) gives the features their
    transform: `adapt.prepare(run)` before the tree is built, `adapt.resume(run, start)` once the
    first pass is known, and `adapt(x, run, tm, am) -> am` before each pass.
    """
    with held_pool(jobs):  # one process pool for all ~40 passes
        return _train_tri(feats, texts, lang_dir, ali_dir, out_dir, cfg, jobs, adapt)


def _train_tri(feats: RaggedStore | str | Path, texts: dict[str, str], lang_dir: str | Path, ali_dir: str | Path,
               out_dir: str | Path, cfg: TriConfig | None, jobs: Jobs, adapt) -> Path:
    cfg = cfg or TriConfig()
    feats = feats if not isinstance(feats, (str, Path)) else open_feats(feats)
    lang, ali_dir = load_lang(lang_dir), Path(ali_dir)
    if already_trained(out_dir, cfg):
        return Path(out_dir)
    exp = ExpDir.create(out_dir, cfg, log_name=getattr(adapt, "log_name", "train_tri"))
    out = exp.path
    old_tree = gmm.read_tree(ali_dir / "tree")
    old_tm, _ = gmm.read_model(ali_dir / "final.mdl", old_tree)
    old_ali = transition_store(ali_dir)
    texts = subset({u: t for u, t in usable_texts(texts, feats).items() if u in old_ali}, feats, cfg.num_utts, "spread")
    started = time.time()
    run = Run.create(exp, None, lang.path, feats, texts, cfg.align, jobs, cfg.seed, "1.mdl")
    if adapt is not None:
        adapt.prepare(run)
    tree, tm, am = build_initial_model(lang, run, old_ali.path, old_tm, old_tree, cfg)
    gmm.write_tree(out / "tree", tree)
    run.tree = tree
    log.info("tree: %d leaves (asked %d) in %.1f s", tree.num_pdfs, cfg.num_leaves, time.time() - started)
    warn_small_tree(tree.num_pdfs, cfg.num_leaves)
    start = 1
    if (resumed := resume(out, tree, cfg.num_iters)) is not None:
        start, tm, am = resumed
    else:
        ali = convert_alignment({u: np.asarray(old_ali[u]) for u in texts}, old_tm, old_tree, tm, tree)
        save_alignment(out / "ali", ali, 0)
        gmm.write_model(out / "1.mdl", tm, am, tree)
    if adapt is not None:
        adapt.resume(run, start)
    inc = max((cfg.tot_gauss - cfg.num_leaves) // cfg.max_iter_inc, 0)
    num_gauss = cfg.num_leaves + inc * min(start - 1, cfg.max_iter_inc)
    tm, am = run_passes(run, am, tm, start=start, num_iters=cfg.num_iters, realign_iters=cfg.realign_iters,
                        align=cfg.align, num_gauss=num_gauss, inc_gauss=inc, max_iter_inc=cfg.max_iter_inc,
                        opts=UpdateOptions(power=cfg.power), desc="train_tri", before_pass=adapt)
    log.info("train_tri: done in %.1f s: %d pdfs, %d Gaussians -> %s/final.mdl",
             time.time() - started, am.num_pdfs, am.num_gauss, out)
    return out


# Kaldi's tri1-tri4 sizes per amount of training data (hours -> tree leaves, total Gaussians), from
# egs/rm/s5 (3.1 h: 1800 / 9000), egs/wsj/s5 tri1 on si84_half (7.5 h: 2000 / 10000) and tri2b on si84
# (15 h: 2500 / 15000), egs/librispeech/s5 tri4b on train_clean_100 (100 h: 4200 / 40000) and tri5b
# on 460 h (5000 / 100000). Below 3.1 h leaves scale with the hours (at least 100) and Gaussians
# stay 5 per leaf, as in RM; between the points both are interpolated in log-hours.
KALDI_GMM_SIZES = [(3.1, 1800, 9000), (7.5, 2000, 10000), (15.0, 2500, 15000), (100.0, 4200, 40000),
                   (460.0, 5000, 100000)]


def gmm_sizes(hours: float) -> tuple[int, int]:
    """(num_leaves, tot_gauss) for `hours` of training audio, by KALDI_GMM_SIZES."""
    first_hours, first_leaves, _ = KALDI_GMM_SIZES[0]
    if hours <= first_hours:
        leaves = max(100, int(round(first_leaves * hours / first_hours, -1)))
        return leaves, 5 * leaves
    for (h0, l0, g0), (h1, l1, g1) in zip(KALDI_GMM_SIZES, KALDI_GMM_SIZES[1:]):
        if hours <= h1:
            w = (np.log(hours) - np.log(h0)) / (np.log(h1) - np.log(h0))
            return int(round(l0 + w * (l1 - l0), -1)), int(round(g0 + w * (g1 - g0), -2))
    return KALDI_GMM_SIZES[-1][1:]


def warn_small_tree(num_pdfs: int, asked: int) -> None:
    """Warn when the tree came out far smaller than asked: the data has too few distinct phone
    contexts (a small vocabulary, e.g. digits) and the extra Gaussians per leaf then overfit, which
    can make tri1 worse than mono without any error."""
    if num_pdfs < asked / 2:
        log.warning("tree: only %d leaves of the %d asked: the training data has too few distinct phone contexts "
                    "for this tree; re-run with --num-leaves %d (and --tot-gauss about %d) so the Gaussians per leaf "
                    "stay sensible, and compare tri1's WER with mono's", num_pdfs, asked, num_pdfs, 8 * num_pdfs)


def transition_store(ali_dir: Path) -> RaggedStore:
    path = ali_dir / "transitions"
    if not path.is_dir():
        raise AsrKdError(f"{ali_dir}: no transitions/ store; a triphone system needs a GMM alignment "
                         f"(from `asr-kd align`), not pdf-only labels")
    return RaggedStore(path)


def pdf_class_of_tids(table: gmm.TransitionTable, topo) -> np.ndarray:
    """Pdf class of each transition id's HMM state (forward pdf class, as acc-tree-stats uses)."""
    out = np.zeros(len(table.phone), np.int32)
    for tid in range(1, len(table.phone)):
        out[tid] = topo.topology_for_phone(int(table.phone[tid]))[int(table.hmm_state[tid])].forward_pdf_class
    return out


def tree_stats_shard(items: list[UttText], feats_path: str, ali_path: str, phone_of: np.ndarray,
                     class_of: np.ndarray, state_of: np.ndarray, ci_phones: list[int]) -> treelib.TreeStats:
    """acc-tree-stats over one shard, in a worker (per-transition-id lookup arrays from the old model)."""
    feats, ali = open_feats(feats_path), RaggedStore(ali_path)
    rows = ((feats[u], phone_of[t], class_of[t], phone_starts(state_of[t]))
            for u, t in ((u, np.asarray(ali[u])) for u, _ in items))
    return treelib.accumulate_tree_stats(rows, ci_phones=ci_phones)


def build_initial_model(lang: Lang, run: Run, ali_path: Path, old_tm, old_tree, cfg: TriConfig):
    """acc-tree-stats (shard by shard) + cluster-phones + build-tree + gmm-init-model. Returns (tree, tm, am)."""
    table = gmm.TransitionTable(old_tm, old_tree)
    topo = lang.topo
    ci = [p for s in read_int_sets(lang.path / "phones/context_indep.int") for p in s] or lang.silence
    parts = run_shards(tree_stats_shard, run.shards, run.jobs, str(run.feats.path), str(ali_path), table.phone,
                       pdf_class_of_tids(table, topo), table.hmm_state, ci, desc="tree stats")
    stats = treelib.merge_tree_stats(parts)
    extra = read_int_sets(lang.path / "phones/extra_questions.int")
    questions = treelib.phone_questions(stats, sorted(topo.phones), lang.silence, extra)
    roots = [(p, c) for p, n in zip(range(len(topo.get_phone_to_num_pdf_classes())), topo.get_phone_to_num_pdf_classes())
             for c in range(max(n, 0))]
    tree_map, num_pdfs, pdf_of_leaf, leaves = treelib.build_tree(
        stats, questions, num_leaves=cfg.num_leaves, min_count=cfg.min_leaf_count, roots=roots)
    tree = gmm.tree_from_bytes(treelib.context_dependency_bytes(tree_map))
    everything = np.arange(len(stats.count))
    gmms = [None] * num_pdfs
    empty = [leaf for leaf, rows in leaves.items() if len(rows) == 0]
    if empty:
        log.warning("tree: %d of %d leaves have no data (states never aligned; e.g. pdf %d), initialised from the "
                    "global mean/variance: they are unused classes for the DNN", len(empty), num_pdfs,
                    pdf_of_leaf[empty[0]])
    for leaf, rows in leaves.items():
        gmms[pdf_of_leaf[leaf]] = leaf_gaussian(stats, rows if len(rows) else everything)
    return tree, gmm.TransitionModel(tree, topo), gmm.make_am(gmms)


def leaf_gaussian(stats: treelib.TreeStats, rows: np.ndarray):
    """gmm-init-model: one Gaussian with the ML mean/variance of the leaf's frames."""
    n = stats.count[rows].sum()
    mean = stats.sum[rows].sum(0) / n
    var = np.maximum(stats.sumsq[rows].sum(0) / n - mean ** 2, 1e-3)
    return gmm.make_gmm(np.ones(1), mean[None], var[None])


def convert_alignment(ali: dict, old_tm, old_tree, new_tm, new_tree) -> dict[str, np.ndarray]:
    """convert-ali: re-express transition-id alignments of the old model in the new model.

    Each frame keeps its phone, HMM state and transition index; its pdf comes from the new tree
    applied to the phone's (left, center, right) context.
    """
    old, new = gmm.TransitionTable(old_tm, old_tree), gmm.TransitionTable(new_tm, new_tree)
    state_of = new.state_lookup()
    topo = new_tm.topo
    cache: dict[tuple, int] = {}
    out = {}
    for utt, tids in ali.items():
        tids = np.asarray(tids)
        phones, starts = old.phone[tids], phone_starts(old.hmm_state[tids])
        seg = np.cumsum(starts) - 1
        seg_phone = phones[np.flatnonzero(starts)]
        left = np.concatenate([[0], seg_phone[:-1]])[seg]
        right = np.concatenate([seg_phone[1:], [0]])[seg]
        keys, inverse = np.unique(np.stack([left, phones, right, old.hmm_state[tids]], 1), axis=0, return_inverse=True)
        states = np.empty(len(keys), np.int64)
        for i, key in enumerate(map(tuple, keys.tolist())):
            if key not in cache:
                cache[key] = _new_state(key, new_tree, topo, state_of, utt)
            states[i] = cache[key]
        out[utt] = (new.state2id[states[inverse.reshape(-1)]] + old.trans_index[tids]).astype(np.int32)
    return out


def _new_state(key, tree, topo, state_of, utt) -> int:
    left, phone, right, hmm_state = key
    pdf_class = topo.topology_for_phone(phone)[hmm_state].forward_pdf_class
    ok, pdf = tree.compute([left, phone, right], pdf_class)
    if not ok or (phone, hmm_state, pdf) not in state_of:
        raise AsrKdError(f"utterance {utt}: cannot map phone {phone} state {hmm_state} in context "
                         f"({left}, {right}) to the new tree")
    return state_of[(phone, hmm_state, pdf)]

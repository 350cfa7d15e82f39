"""Speaker-adaptive training with per-speaker fMLLR (Kaldi's steps/train_sat.sh), the "tri3" system,
and fMLLR transforms for any set (steps/align_fmllr.sh, decode_fmllr.sh's adaptation step).

Training, from an LDA+MLLT system's alignment store (tri2_ali, with its final.mdl and tree):
    features = tri2's spliced LDA+MLLT view (final.mat), then per speaker [A b]
    -> initial fMLLR from the tri2 alignment and model (silence weighted 0)
    -> tree + one Gaussian per leaf on the adapted features, convert-ali, EM passes as train_deltas
    -> at each pass in `fmllr_iters`: fMLLR re-estimated with the current model on the adapted
       features, composed with the current transform (trans.x.npz)
    -> `si/final.mdl` (Kaldi's final.alimdl): the model re-estimated on the speaker-independent
       features with Gaussian posteriors from the adapted ones (gmm-acc-stats-twofeats), for the
       first, speaker-independent pass of alignment and decoding.
Transforms are applied in the shard workers through the view `feats/` (feature_view.py).
`adapt_set` adapts another set: align its text (the reference, or a first-pass hypothesis) with
si/final.mdl on the SI features, estimate each speaker's fMLLR with final.mdl, write a view.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_kd.align.alignment import AlignConfig, ModelPaths, UttText, align_set, utt_shards
from asr_kd.align.em import load_alignment, save_alignment
from asr_kd.align.fmllr import FmllrStats, accumulate_fmllr, compose, estimate_fmllr, identity
from asr_kd.align.gmm_stats import GmmStats, pdf_posteriors
from asr_kd.align.gmm_update import UpdateOptions, estimate
from asr_kd.align.graphs import load_lang
from asr_kd.align.lda_mllt import silence_tids
from asr_kd.align.tri import TriConfig, train_tri
from asr_kd.data.datadir import read_table
from asr_kd.data.feature_view import fmllr_table, model_view, open_feats, transform_files
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path, write_json
from asr_kd.kaldi import gmm
from asr_kd.parallel import Jobs, run_shards, split

log = logging.getLogger(__name__)


@dataclass
class SatConfig(TriConfig):
    fmllr_iters: list[int] = field(default_factory=lambda: [2, 4, 6, 12])
    fmllr_min_count: float = 20.0     # gmm-est-fmllr --fmllr-min-count: fewer frames keep the identity
    fmllr_row_iters: int = 40         # row-by-row sweeps per estimate (FmllrOptions::num_iters)


# ---------------------------------------------------------------- per-speaker estimation

def fmllr_shard(speakers: list[tuple[str, list[str]]], feats_path: str, ali_path: str, gmms, tid_to_pdf: np.ndarray,
                tid_weight: np.ndarray, iters: int, min_count: float) -> dict[str, tuple[np.ndarray, float, float]]:
    """gmm-est-fmllr for a shard of speakers: {speaker: ([A b], auxf improvement per frame, frames)}."""
    feats = open_feats(feats_path)
    out = {}
    for spk, utts in speakers:
        ali = read_tids(ali_path, utts)
        stats = FmllrStats.zeros(gmms.dim)
        if ali:                                 # the speaker's frames together: one product per pdf
            tids = np.concatenate(list(ali.values()))
            accumulate_fmllr(stats, gmms, np.concatenate([feats[u] for u in ali]), tid_to_pdf[tids], tid_weight[tids])
        W, impr = estimate_fmllr(stats, iters=iters, min_count=min_count)
        out[spk] = (W, impr, stats.beta)
    return out


def read_tids(ali_path: str, utts: list[str]) -> dict[str, np.ndarray]:
    """Transition ids of `utts` (those aligned) from a training run's `ali/` or a `transitions/` store."""
    if not (Path(ali_path) / "meta.json").is_file():
        return load_alignment(ali_path, utts)
    store = RaggedStore(ali_path)
    return {u: np.asarray(store[u]) for u in utts if u in store}


def estimate_speakers(feats_path: str, ali_path: str, utt2spk: dict[str, str], tm, tree, am, silence: list[int],
                      silence_weight: float, jobs: Jobs, iters: int = 40, min_count: float = 20.0,
                      desc: str = "fmllr") -> tuple[dict[str, np.ndarray], dict]:
    """Each speaker's fMLLR on the features at `feats_path`, from the alignment at `ali_path`.

    Speakers are independent, so any sharding gives the same transforms. Returns ({spk: [A b]}, summary).
    """
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    weights = silence_tids(tm, tree, silence)
    weights = np.where(weights == 0, silence_weight, 1.0)
    table = gmm.TransitionTable(tm, tree)
    parts = run_shards(fmllr_shard, split(sorted(spk2utt.items()), jobs.nj), jobs, feats_path, ali_path,
                       gmm.stacked(am), table.pdf, weights, iters, min_count, desc=desc)
    results = {spk: r for part in parts for spk, r in part.items()}
    frames = sum(r[2] for r in results.values())
    summary = {"speakers": len(results), "frames": frames,
               "impr_per_frame": sum(r[1] * r[2] for r in results.values()) / max(frames, 1.0),
               "unadapted": sorted(s for s, r in results.items() if r[2] < min_count)}
    if summary["unadapted"]:
        log.warning("%s: %d speaker(s) with under %g frames keep the identity transform: %s", desc,
                    len(summary["unadapted"]), min_count, " ".join(summary["unadapted"][:10]))
    return {spk: r[0] for spk, r in results.items()}, summary


def save_transforms(path: Path, transforms: dict[str, np.ndarray]) -> None:
    speakers = sorted(transforms)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, speakers=np.array(speakers, dtype=str),
                     transforms=np.stack([transforms[s] for s in speakers]))


def load_transforms(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return dict(zip((str(s) for s in z["speakers"]), z["transforms"]))


# ---------------------------------------------------------------- training

class Sat:
    """The `adapt` of train_tri for SAT: initial fMLLR before the tree, re-estimated at `fmllr_iters`."""
    log_name = "train_sat"

    def __init__(self, cfg: SatConfig, store: Path, ali_dir: Path, utt2spk: dict[str, str], silence: list[int]):
        self.cfg, self.store, self.ali_dir, self.utt2spk, self.silence = cfg, store, ali_dir, utt2spk, silence

    def _view(self, run, transforms: dict[str, np.ndarray]) -> None:
        self.current = transforms
        run.feats = model_view(self.ali_dir, self.store, run.exp.path / "feats", fmllr_table(transforms, self.utt2spk))

    def prepare(self, run) -> None:
        out = run.exp.path
        for name, path in transform_files(self.ali_dir).items():
            shutil.copyfile(path, out / name)
        if not (out / "trans.0.npz").is_file():
            si = model_view(self.ali_dir, self.store, out / "feats_si")
            tree = gmm.read_tree(self.ali_dir / "tree")
            tm, am = gmm.read_model(self.ali_dir / "final.mdl", tree)
            transforms, summary = self._estimate(run, str(si.path), str(self.ali_dir / "transitions"), tm, tree, am, 0)
            save_transforms(out / "trans.0.npz", transforms)
        self._view(run, load_transforms(out / "trans.0.npz"))

    def _estimate(self, run, feats_path, ali_path, tm, tree, am, x):
        utt2spk = {u: self.utt2spk[u] for shard in run.shards for u, _ in shard}
        transforms, summary = estimate_speakers(feats_path, ali_path, utt2spk, tm, tree, am, self.silence, 0.0,
                                                run.jobs, self.cfg.fmllr_row_iters, self.cfg.fmllr_min_count,
                                                desc=f"fmllr pass {x}")
        log.info("pass %d: fMLLR for %d speakers, auxf improvement %.4f per frame", x, summary["speakers"],
                 summary["impr_per_frame"])
        run.exp.log_metrics({"pass": x, "fmllr_impr_per_frame": summary["impr_per_frame"],
                             "fmllr_speakers": summary["speakers"]})
        return transforms, summary

    def resume(self, run, start: int) -> None:
        done = [x for x in self.cfg.fmllr_iters if x < start]
        self._view(run, load_transforms(run.exp.path / f"trans.{done[-1] if done else 0}.npz"))

    def __call__(self, x: int, run, tm, am):
        if x not in self.cfg.fmllr_iters:
            return am
        current = self.current
        new, _ = self._estimate(run, str(run.feats.path), str(run.exp.path / "ali"), tm, run.tree, am, x)
        composed = {s: compose(W, current.get(s, identity(W.shape[0]))) for s, W in new.items()}
        save_transforms(run.exp.path / f"trans.{x}.npz", composed)
        self._view(run, composed)
        return am


def twofeats_shard(items: list[UttText], feats_path: str, si_path: str, ali_path: str, gmms,
                   tid_to_pdf: np.ndarray) -> GmmStats:
    """gmm-acc-stats-twofeats over one shard: posteriors from the adapted features, moments of the SI ones."""
    feats, si = open_feats(feats_path), open_feats(si_path)
    ali = load_alignment(ali_path, [u for u, _ in items])
    stats = GmmStats.zeros(len(gmms.weights), gmms.dim, len(tid_to_pdf) - 1)
    if ali:
        tids = np.concatenate(list(ali.values()))
        x, y = np.concatenate([feats[u] for u in ali]), np.concatenate([si[u] for u in ali]).astype(np.float64)
        stats.transitions += np.bincount(tids, minlength=len(stats.transitions))
        for rows, frames, post in pdf_posteriors(gmms, x, tid_to_pdf[tids]):
            stats.occupancy[rows] += post.sum(0)
            stats.sum_x[rows] += post.T @ y[frames]
            stats.sum_x2[rows] += post.T @ (y[frames] ** 2)
        stats.frames += len(tids)
    return stats


def write_si_model(out: Path, run_shards_of: list, jobs: Jobs, power: float) -> None:
    """`si/final.mdl` + `si/tree` (Kaldi's final.alimdl as a model dir, so align/decode take it)."""
    if (out / "si" / "final.mdl").is_file():
        return
    tree = gmm.read_tree(out / "tree")
    tm, am = gmm.read_model(out / "final.mdl", tree)
    gmms = gmm.stacked(am)
    si = open_feats(out / "feats_si")
    parts = run_shards(twofeats_shard, run_shards_of, jobs, str(out / "feats"), str(si.path), str(out / "ali"),
                       gmms, np.asarray(tm.id2pdf_id, np.int32), desc="si model")
    total = parts[0]
    for part in parts[1:]:
        total.add(part)
    new, _ = estimate(gmms, total, UpdateOptions(power=power))
    (out / "si").mkdir(exist_ok=True)
    shutil.copyfile(out / "tree", out / "si" / "tree")
    gmm.write_model(out / "si" / "final.mdl", tm, gmm.am_from_stacked(new), tree)


def train_sat(store: str | Path, data_dir: str | Path, lang_dir: str | Path, ali_dir: str | Path,
              out_dir: str | Path, cfg: SatConfig | None = None, jobs: Jobs = Jobs()) -> Path:
    """Train tri3 into `out_dir` from an LDA+MLLT alignment store (e.g. tri2_ali with final.mat.npy)."""
    cfg = cfg or SatConfig()
    ali_dir = Path(ali_dir)
    if not transform_files(ali_dir) or not (ali_dir / "transitions").is_dir():
        raise AsrKdError(f"{ali_dir}: SAT needs the alignment store of an LDA+MLLT system (final.mat.npy, "
                         f"transitions/); align with tri2 first (`asr-kd align --feats-view`)")
    data_dir = Path(data_dir)
    texts, utt2spk = read_table(data_dir / "text"), read_table(data_dir / "utt2spk")
    adapt = Sat(cfg, Path(store), ali_dir, utt2spk, load_lang(lang_dir).silence)
    out = train_tri(RaggedStore(store), texts, lang_dir, ali_dir, out_dir, cfg, jobs, adapt=adapt)
    if not (out / "si" / "final.mdl").is_file():
        utts = sorted(load_alignment(out / "ali"))
        write_si_model(out, utt_shards({u: "" for u in utts}, cfg.align.shard_size), jobs, cfg.power)
    return out


# ---------------------------------------------------------------- adapting another set

def adapt_set(sat_dir: str | Path, store: str | Path, texts: dict[str, str], utt2spk: dict[str, str],
              lang_dir: str | Path, out_view: str | Path, *, silence_weight: float = 0.0,
              align: AlignConfig | None = None, jobs: Jobs = Jobs(), cfg: SatConfig | None = None) -> dict:
    """fMLLR-adapted view of `store` at `out_view` (steps/align_fmllr.sh's adaptation; decode_fmllr.sh's
    with first-pass hypotheses as `texts`). Returns a summary (also written as `<out_view>.json`).

    `texts` are aligned with `si/final.mdl` on the speaker-independent view; each speaker's
    transform is estimated with final.mdl from that alignment, silence frames weighted by
    `silence_weight` (Kaldi: 0 for alignment, 0.01 for decoding). Speakers without an aligned
    utterance get the identity.
    """
    sat_dir, out_view, align, cfg = Path(sat_dir), Path(out_view), align or AlignConfig(), cfg or SatConfig()
    lang = load_lang(lang_dir)
    si_view = model_view(sat_dir, store, out_view.with_name(out_view.name + ".si"))
    kept = {u: t for u, t in texts.items() if u in si_view}
    paths = ModelPaths(str(lang.path), str(sat_dir / "si" / "tree"), str(sat_dir / "si" / "final.mdl"), str(si_view.path))
    ali, failed, like = align_set(paths, utt_shards(kept, align.shard_size), align, jobs, desc=f"si align {out_view.name}")
    ali_path = out_view.with_name(out_view.name + ".ali")
    save_alignment(ali_path, ali, 0)
    tree = gmm.read_tree(sat_dir / "tree")
    tm, am = gmm.read_model(sat_dir / "final.mdl", tree)
    speakers = {u: s for u, s in utt2spk.items() if u in si_view}
    transforms, summary = estimate_speakers(str(si_view.path), str(ali_path), speakers, tm, tree, am, lang.silence,
                                            silence_weight, jobs, cfg.fmllr_row_iters, cfg.fmllr_min_count,
                                            desc=f"fmllr {out_view.name}")
    model_view(sat_dir, store, out_view, fmllr_table(transforms, speakers))
    summary.update(si_align_failed=failed, si_align_avg_loglike=like, silence_weight=silence_weight)
    write_json(out_view.with_name(out_view.name + ".json"), summary)
    shutil.rmtree(si_view.path, ignore_errors=True)
    shutil.rmtree(ali_path, ignore_errors=True)
    return summary

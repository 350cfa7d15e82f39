"""The parts of GMM-HMM training shared by mono.py and tri.py: one EM pass, realignment, checkpoints, resume.

Every pass runs its shards through `asr_kd.parallel` (--nj local processes or a Dask cluster):
realignment shards compile their graphs once per run (kept in `graphs/`) and read the model from
`x.mdl`; accumulation shards read the alignment from `ali/` (memory-mapped .npy arrays) and return statistics, summed in
shard order. Shards are cut by utterance count (`align.shard_size`), so --nj 1, 4 or a cluster
give the same bytes. Mixing up draws from `np.random.default_rng([seed, pass])`: every pass,
resumed or not, draws the same numbers, and two runs give byte-identical models.

Each finished pass x writes `x+1.mdl` (atomically); the alignment in use is saved as `ali/`
after each realignment, so a killed run restarts at the last finished pass and ends with the same
`final.mdl` as an uninterrupted one. A dir holding a run of another config is refused rather than mixed.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr_kd.align.alignment import AlignConfig, ModelPaths, UttText, align_set, utt_shards
from asr_kd.align.gmm_stats import GmmStats, accumulate, sum_stats
from asr_kd.align.gmm_update import UpdateOptions, estimate
from asr_kd.config import load_config
from asr_kd.data.feature_view import open_feats
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError
from asr_kd.expdir import ExpDir
from asr_kd.io import atomic_path
from asr_kd.kaldi import gmm
from asr_kd.parallel import Jobs, run_shards

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


def subset(texts: dict[str, str], feats: RaggedStore, num_utts: int, how: str) -> dict[str, str]:
    """Kaldi's utils/subset_data_dir.sh: `num_utts` utterances, the shortest or evenly spread; all if <= 0.

    "shortest" (--shortest, the monophone subset of Kaldi's LibriSpeech recipe) takes the fewest
    frames, ties by id; "spread" takes every (len / num_utts)-th utterance in id order (subset_scp.pl).
    """
    if num_utts <= 0 or num_utts >= len(texts):
        return dict(texts)
    utts = sorted(texts)
    if how == "shortest":
        chosen = sorted(utts, key=lambda u: (feats.num_rows(u), u))[:num_utts]
    elif how == "spread":
        chosen = [utts[i * len(utts) // num_utts] for i in range(num_utts)]
    else:
        raise AsrKdError(f"subset: unknown selection {how!r} (shortest | spread)")
    log.info("training on a subset: %d of %d utterances (%s)", num_utts, len(texts), how)
    return {u: texts[u] for u in sorted(chosen)}


@dataclass
class Run:
    """What every pass of one training run works on: its dir, tree, data shards and jobs."""
    exp: ExpDir
    tree: object
    lang_dir: Path
    feats: RaggedStore
    shards: list[list[UttText]]
    jobs: Jobs
    seed: int
    initial_model: str     # the graphs are compiled with its transition model ("0.mdl" mono, "1.mdl" tri), as in Kaldi

    @classmethod
    def create(cls, exp: ExpDir, tree, lang_dir, feats: RaggedStore, texts: dict[str, str], align: AlignConfig,
               jobs: Jobs, seed: int, initial_model: str) -> "Run":
        return cls(exp, tree, Path(lang_dir), feats, utt_shards(texts, align.shard_size), jobs, seed, initial_model)

    def paths(self, model: str) -> ModelPaths:
        return ModelPaths(str(self.lang_dir), str(self.exp.path / "tree"), str(self.exp.path / model),
                          str(self.feats.path), graph_dir=str(self.exp.path / "graphs"),
                          graph_model=str(self.exp.path / self.initial_model))


def accumulate_shard(items: list[UttText], feats_path: str, ali_path: str, gmms: gmm.DiagGmms,
                     tid_to_pdf: np.ndarray) -> GmmStats:
    """gmm-acc-stats-ali over one shard, in a worker: features and alignment read from their files.

    The shard's frames are accumulated together (one matrix product per pdf for the whole shard);
    memory holds one shard's features.
    """
    feats = open_feats(feats_path)
    stats = GmmStats.zeros(len(gmms.weights), gmms.dim, len(tid_to_pdf) - 1)
    ali = load_alignment(ali_path, [utt for utt, _ in items])   # utterances that failed to align are absent
    if ali:
        accumulate(gmms, np.concatenate([feats[u] for u in ali]), np.concatenate(list(ali.values())), tid_to_pdf, stats)
    return stats


def em_pass(x: int, am, tm, run: Run, *, mixup: int, opts: UpdateOptions):
    """One gmm-acc-stats-ali + gmm-est pass on the alignment in `ali`; writes `x+1.mdl`. Returns (tm, am)."""
    gmms = gmm.stacked(am)
    parts = run_shards(accumulate_shard, run.shards, run.jobs, str(run.feats.path), str(run.exp.path / "ali"),
                       gmms, np.asarray(tm.id2pdf_id, np.int32), desc=f"acc pass {x}")
    stats = sum_stats(parts)
    tm, t_impr, t_count = gmm.update_transitions(tm, stats.transitions)
    new, info = estimate(gmms, stats, opts, mixup=mixup, rng=np.random.default_rng([run.seed, x]))
    am = gmm.am_from_stacked(new)
    gmm.write_model(run.exp.path / f"{x + 1}.mdl", tm, am, run.tree)
    record = {"avg_loglike": stats.loglike / max(stats.frames, 1), **info,
              "trans_impr_per_frame": t_impr / max(t_count, 1.0), "frames": stats.frames}
    log.info("pass %d: avg loglike %.4f over %d frames, %d Gaussians", x, record["avg_loglike"],
             stats.frames, info["num_gauss"])
    run.exp.log_metrics({"pass": x, **record})
    return tm, am


def save_alignment(path: Path, ali: dict[str, np.ndarray], x: int) -> None:
    """The alignment in use, as a directory of .npy arrays: sorted ids, offsets, all transition ids.

    Plain .npy files (not one .npz) so that each EM shard memory-maps them and reads only its own
    utterances (a binary search in the sorted ids): a shard's cost does not grow with the corpus.
    """
    utts = sorted(ali)
    offsets = np.concatenate([[0], np.cumsum([len(ali[u]) for u in utts])]).astype(np.int64)
    tids = np.concatenate([ali[u] for u in utts]).astype(np.int32) if utts else np.zeros(0, np.int32)
    with atomic_path(path, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for name, array in (("pass", np.array(x)), ("utts", np.array(utts, dtype=str)),
                            ("offsets", offsets), ("tids", tids)):
            np.save(tmp / f"{name}.npy", array)


def load_alignment(path: str | Path, utts: list[str] | None = None) -> dict[str, np.ndarray]:
    """{utt: tids} from `save_alignment`'s directory, for `utts` (those present) or all."""
    path = Path(path)
    if not (path / "tids.npy").is_file():
        raise AsrKdError(f"{path}: no alignment here (from an older version?); remove the training dir and re-run")
    ids = np.load(path / "utts.npy", mmap_mode="r")
    offsets = np.load(path / "offsets.npy", mmap_mode="r")
    tids = np.load(path / "tids.npy", mmap_mode="r")
    if utts is None:
        rows = range(len(ids))
    else:
        wanted = np.array(utts, dtype=str)
        pos = np.searchsorted(ids, wanted) if len(ids) else np.zeros(len(wanted), np.int64)
        rows = [int(i) for i, u in zip(pos, wanted) if i < len(ids) and ids[i] == u]
    return {str(ids[i]): np.array(tids[offsets[i]:offsets[i + 1]]) for i in rows}


def resume(out: Path, tree, num_iters: int):
    """(first pass to run, tm, am) from the checkpoints in `out`; None if none."""
    done = sorted(int(p.stem) for p in out.glob("*.mdl") if p.stem.isdigit() and int(p.stem) >= 1)
    if not done or not (out / "ali" / "tids.npy").is_file():
        return None
    last = min(done[-1], num_iters)
    tm, am = gmm.read_model(out / f"{last}.mdl", tree)
    log.info("resuming at pass %d from %s/%d.mdl", last, out, last)
    return last, tm, am


def realign(x: int, run: Run, cfg: AlignConfig) -> None:
    """Align the training set with `x.mdl` and save it as the alignment in use (`ali`)."""
    ali, failed, like = align_set(run.paths(f"{x}.mdl"), run.shards, cfg, run.jobs, desc=f"align pass {x}")
    if not ali:
        raise AsrKdError(f"{run.exp.path}: pass {x}: no utterance could be aligned ({len(failed)} failed)")
    save_alignment(run.exp.path / "ali", ali, x)
    run.exp.log_metrics({"pass": x, "align_avg_loglike": like, "align_failed": len(failed)})


def run_passes(run: Run, am, tm, *, start: int, num_iters: int, realign_iters: list[int], align: AlignConfig,
               num_gauss: int, inc_gauss: int, max_iter_inc: int, opts: UpdateOptions, desc: str,
               before_pass=None):
    """Passes start .. num_iters-1 (realign, accumulate, re-estimate, mix up), then `final.mdl`.

    `num_gauss` is the Gaussian target of pass `start`; it grows by `inc_gauss` up to pass `max_iter_inc`.
    `before_pass(x, run, tm, am) -> am`, if given, runs after the realignment of pass x (the
    feature-transform updates of MLLT and SAT training, which may change the model's means).
    """
    for x in tqdm(range(start, num_iters), desc=desc, unit="pass", initial=start, total=num_iters):
        if x in realign_iters:
            realign(x, run, align)
        if before_pass is not None:
            am = before_pass(x, run, tm, am)
        tm, am = em_pass(x, am, tm, run, mixup=num_gauss, opts=opts)
        if x <= max_iter_inc:
            num_gauss += inc_gauss
    with atomic_path(run.exp.path / "final.mdl") as tmp:
        shutil.copyfile(run.exp.path / f"{num_iters}.mdl", tmp)
    shutil.rmtree(run.exp.path / "graphs", ignore_errors=True)   # compiled for this run only
    return tm, am

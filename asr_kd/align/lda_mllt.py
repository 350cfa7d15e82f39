"""LDA+MLLT triphone training (Kaldi's steps/train_lda_mllt.sh), the "tri2" system.

    static MFCCs (the store's first `columns` columns, CMN applied) spliced +-`splice` frames
    -> LDA to `lda_dim` dims over the previous alignment's pdfs, silence frames weighted 0 (0.mat)
    -> tree + one Gaussian per leaf on the LDA features, convert-ali, EM passes as train_deltas
    -> at each pass in `mllt_iters`: MLLT from the current model and alignment (est-mllt), the
       model's means transformed (gmm-transform-means), the transform composed (x.mat = A . cur).

The transform is applied inside the shard workers through a feature view (`exp/tri2/feats`,
rewritten at each MLLT pass), not by writing features (asr_kd/data/feature_view.py). `N.mat.npy`
keeps each composed transform, so a killed run resumes with the transform of its pass;
`final.mat.npy` is the one the final model was trained on. `asr_kd.data.feature_view.model_view`
makes the same view of another set (dev, test) for alignment and decoding.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_kd.align.alignment import UttText
from asr_kd.align.em import load_alignment
from asr_kd.align.graphs import load_lang
from asr_kd.align.lda import LdaStats, accumulate_lda, estimate_lda
from asr_kd.align.mllt import MlltStats, accumulate_mllt, estimate_mllt, transform_means
from asr_kd.align.tri import TriConfig, train_tri
from asr_kd.data.feature_view import open_feats, write_view
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path, write_json
from asr_kd.kaldi import gmm
from asr_kd.parallel import Jobs, run_shards

log = logging.getLogger(__name__)


@dataclass
class LdaMlltConfig(TriConfig):
    lda_dim: int = 40                 # est-lda --dim
    splice: int = 3                   # frames each side (Kaldi's splice_opts --left-context=3 --right-context=3)
    columns: int = 13                 # static MFCCs taken from the store (no deltas)
    mllt_iters: list[int] = field(default_factory=lambda: [2, 4, 6, 12])


def save_matrix(path: Path, matrix: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(matrix, np.float64))


def silence_tids(tm, tree, silence: list[int]) -> np.ndarray:
    """Weight per transition id: 0 for silence phones, 1 otherwise (weight-silence-post 0.0)."""
    table = gmm.TransitionTable(tm, tree)
    return np.where(np.isin(table.phone, list(silence)), 0.0, 1.0)


def lda_shard(items: list[UttText], feats_path: str, ali_dir: str, silence: list[int], num_pdfs: int) -> LdaStats:
    """acc-lda over one shard: classes are the alignment store's pdfs, silence frames weighted 0."""
    feats, pdfs, phones = open_feats(feats_path), RaggedStore(ali_dir), RaggedStore(Path(ali_dir) / "phones")
    utts = [u for u, _ in items if u in pdfs]
    stats = LdaStats.zeros(num_pdfs, feats.meta["dim"])
    if utts:
        x = np.concatenate([feats[u] for u in utts])
        weights = np.concatenate([~np.isin(phones[u], silence) for u in utts]).astype(np.float64)
        accumulate_lda(stats, x, np.concatenate([pdfs[u] for u in utts]), weights)
    return stats


def mllt_shard(items: list[UttText], feats_path: str, ali_path: str, gmms, tid_to_pdf: np.ndarray,
               tid_weight: np.ndarray) -> MlltStats:
    """gmm-acc-mllt over one shard, with the alignment in use (`ali/`)."""
    feats = open_feats(feats_path)
    ali = load_alignment(ali_path, [u for u, _ in items])
    stats = MlltStats.zeros(gmms.dim)
    if ali:
        tids = np.concatenate(list(ali.values()))
        accumulate_mllt(stats, gmms, np.concatenate([feats[u] for u in ali]), tid_to_pdf[tids], tid_weight[tids])
    return stats


def sum_in_order(parts):
    total = parts[0]
    for part in parts[1:]:
        total.add(part)
    return total


class LdaMllt:
    """The `adapt` of train_tri for LDA+MLLT: LDA before the tree, MLLT at `mllt_iters`."""
    log_name = "train_lda_mllt"

    def __init__(self, cfg: LdaMlltConfig, store: Path, ali_dir: Path, silence: list[int]):
        self.cfg, self.store, self.ali_dir, self.silence = cfg, Path(store), Path(ali_dir), silence

    def _view(self, run, matrix: np.ndarray) -> None:
        c = self.cfg
        run.feats = write_view(run.exp.path / "feats", self.store, columns=c.columns, left=c.splice, right=c.splice,
                               matrix=matrix)
        save_matrix(run.exp.path / "final.mat.npy", matrix)
        write_json(run.exp.path / "transform.json", {"columns": c.columns, "splice": [c.splice, c.splice]})

    def prepare(self, run) -> None:
        out, c = run.exp.path, self.cfg
        if not (out / "0.mat.npy").is_file():
            spliced = write_view(out / "spliced", self.store, columns=c.columns, left=c.splice, right=c.splice)
            num_pdfs = int(RaggedStore(self.ali_dir).meta["num_pdfs"])
            parts = run_shards(lda_shard, run.shards, run.jobs, str(spliced.path), str(self.ali_dir), self.silence,
                               num_pdfs, desc="lda stats")
            matrix, eigvals = estimate_lda(sum_in_order(parts), c.lda_dim)
            save_matrix(out / "0.mat.npy", matrix)
            shutil.rmtree(spliced.path)
            log.info("LDA: %d -> %d dims; between-class eigenvalues %.3g .. %.3g", matrix.shape[1], matrix.shape[0],
                     eigvals[0], eigvals[-1])
            run.exp.log_metrics({"pass": 0, "lda_eigenvalues": [round(float(e), 5) for e in eigvals]})
        self._view(run, np.load(out / "0.mat.npy"))

    def resume(self, run, start: int) -> None:
        done = [x for x in self.cfg.mllt_iters if x < start]
        self._view(run, np.load(run.exp.path / f"{done[-1] if done else 0}.mat.npy"))

    def __call__(self, x: int, run, tm, am):
        if x not in self.cfg.mllt_iters:
            return am
        gmms = gmm.stacked(am)
        table = gmm.TransitionTable(tm, run.tree)
        parts = run_shards(mllt_shard, run.shards, run.jobs, str(run.feats.path), str(run.exp.path / "ali"), gmms,
                           table.pdf, silence_tids(tm, run.tree, self.silence), desc=f"mllt pass {x}")
        A, impr = estimate_mllt(sum_in_order(parts))
        matrix = A @ run.feats.matrix
        save_matrix(run.exp.path / f"{x}.mat.npy", matrix)
        self._view(run, matrix)
        log.info("pass %d: MLLT, auxf improvement %.4f per frame", x, impr)
        run.exp.log_metrics({"pass": x, "mllt_impr_per_frame": impr})
        return gmm.am_from_stacked(transform_means(gmms, A))


def train_lda_mllt(store: str | Path, texts: dict[str, str], lang_dir: str | Path, ali_dir: str | Path,
                   out_dir: str | Path, cfg: LdaMlltConfig | None = None, jobs: Jobs = Jobs()) -> Path:
    """Train tri2 into `out_dir` (final.mdl, tree, final.mat.npy, feats/) from the alignment store `ali_dir`."""
    cfg = cfg or LdaMlltConfig()
    if not (Path(ali_dir) / "phones").is_dir():
        raise AsrKdError(f"{ali_dir}: no phones/ store; LDA needs a GMM alignment store (from `asr-kd align`)")
    adapt = LdaMllt(cfg, Path(store), Path(ali_dir), load_lang(lang_dir).silence)
    return train_tri(RaggedStore(store), texts, lang_dir, ali_dir, out_dir, cfg, jobs, adapt=adapt)

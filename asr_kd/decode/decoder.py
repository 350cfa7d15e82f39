"""Decoding (frames x pdfs) log-likelihood matrices to words with Kaldi's lattice-faster decoder.

The same entry point serves GMMs (`gmm_loglikes`) and DNNs (log posterior - log prior). The decoder
asks for a score per transition id, so each matrix is expanded through the transition model's
transition-id -> pdf map and pre-multiplied by the acoustic scale. (kaldi-hmm-gmm's DecodableCtc
returns column `index - 1` for transition id `index`, which is why column 0 is transition id 1.)
A single-pass decoder has one knob for the acoustic/LM balance, the acoustic scale (LM weight =
1 / acoustic scale in Kaldi's scoring terms); a word insertion penalty (a cost added to every
word-emitting arc, as Kaldi's scoring scripts tune) is the second.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from asr_kd.align.gmm_stats import component_loglikes
from asr_kd.data.feature_view import open_feats
from asr_kd.decode.lattice import WordLattice, from_kaldi
from asr_kd.errors import AsrKdError
from asr_kd.io import read_json, sha256_file
from asr_kd.parallel import Jobs, run_shards, split

log = logging.getLogger(__name__)

FRAME_SHIFT_S = 0.01


@dataclass
class DecodeStats:
    num_utts: int = 0
    num_failed: int = 0      # no final state reached (a partial best path is used)
    num_frames: int = 0
    seconds: float = 0.0

    @property
    def real_time_factor(self) -> float:
        """Decoding time / audio duration (10 ms frames)."""
        return self.seconds / max(self.num_frames * FRAME_SHIFT_S, 1e-9)


class Decoder:
    """A loaded graph + transition model; `decode_one` turns one matrix into words."""

    def __init__(self, graph_dir: str | os.PathLike, model_path: str | os.PathLike, *, beam: float = 13.0,
                 lattice_beam: float = 6.0, max_active: int = 7000, word_penalty: float = 0.0):
        import kaldi_hmm_gmm as khg
        from asr_kd.kaldi.fst import add_word_penalty, read_fst
        from asr_kd.kaldi.gmm import read_model, read_tree
        from asr_kd.lang.prepare_lang import read_symbol_table

        graph_dir, model_path = Path(graph_dir), Path(model_path)
        tree_path = model_path.parent / "tree"
        _check_graph_matches(graph_dir, tree_path)
        self.trans_model, self.am = read_model(model_path, read_tree(tree_path))
        self.pdf_of_tid = np.asarray(self.trans_model.id2pdf_id, dtype=np.int64)[1:]  # column t-1 = tid t
        self.num_pdfs = self.trans_model.num_pdfs
        self.id2word = {i: w for w, i in read_symbol_table(graph_dir / "words.txt").items()}
        self.graph = read_fst(graph_dir / "HCLG.fst")
        self.word_penalty = word_penalty
        if word_penalty:
            self.graph = add_word_penalty(self.graph, word_penalty)
        config = khg.LatticeFasterDecoderConfig(beam=beam, max_active=max_active, lattice_beam=lattice_beam)
        self._decoder = khg.LatticeFasterDecoder(self.graph, config)
        self._khg = khg
        self._beam, self._lattice_beam, self._lattice_decoder = beam, lattice_beam, None

    def decode_one(self, utt: str, loglikes: np.ndarray, acoustic_scale: float) -> tuple[list[str], bool]:
        """Best word sequence of one utterance, and whether it reached a final state."""
        words, _, ok = self.decode_with_alignment(utt, loglikes, acoustic_scale)
        return words, ok

    def decode_with_alignment(self, utt: str, loglikes: np.ndarray,
                              acoustic_scale: float) -> tuple[list[str], np.ndarray, bool]:
        """Best words, the best path's transition id per frame, and whether a final state was reached."""
        decodable = self._khg.DecodableCtc(self._scores(utt, loglikes, acoustic_scale))
        ok, tids, word_ids, _ = self._khg.decode_utterance_lattice_faster(
            decoder=self._decoder, decodable=decodable, trans_model=self.trans_model, utt=utt, allow_partial=True)
        return [self.id2word[i] for i in word_ids], np.asarray(tids, np.int32), ok

    def lattice(self, utt: str, loglikes: np.ndarray, acoustic_scale: float) -> WordLattice:
        """The utterance's lattice (paths within the lattice beam of the best, on this decoder's graph,
        its word penalty included), from Kaldi's LatticeSimpleDecoder: kaldi-decoder exposes its raw
        lattice, kaldi-hmm-gmm's lattice-faster binding only the best path."""
        import kaldi_decoder

        if self._lattice_decoder is None:
            config = kaldi_decoder.LatticeSimpleDecoderConfig(beam=self._beam, lattice_beam=self._lattice_beam)
            self._lattice_decoder = kaldi_decoder.LatticeSimpleDecoder(self.graph, config)
        self._lattice_decoder.decode(kaldi_decoder.DecodableCtc(self._scores(utt, loglikes, acoustic_scale)))
        _, raw = self._lattice_decoder.get_raw_lattice(use_final_probs=True)
        reached_final = self._lattice_decoder.final_relative_cost() != float("inf")
        return from_kaldi(raw, acoustic_scale, reached_final, utt)

    def _scores(self, utt: str, loglikes: np.ndarray, acoustic_scale: float) -> np.ndarray:
        """Scaled log-likelihoods per transition id (column t - 1 = transition id t), checked."""
        if loglikes.ndim != 2 or loglikes.shape[1] != self.num_pdfs:
            raise AsrKdError(f"utterance {utt}: log-likelihoods have shape {loglikes.shape}, "
                             f"the model has {self.num_pdfs} pdfs")
        if not np.isfinite(loglikes).all():
            raise AsrKdError(f"utterance {utt}: log-likelihoods contain NaN or inf")
        return np.ascontiguousarray(acoustic_scale * loglikes[:, self.pdf_of_tid], dtype=np.float32)


def decode(loglikes: Mapping[str, np.ndarray], graph_dir: str | os.PathLike, model_path: str | os.PathLike,
           acoustic_scale: float = 0.1, beam: float = 13.0, lattice_beam: float = 6.0,
           max_active: int = 7000) -> dict[str, list[str]]:
    """Decode every utterance of `loglikes` (utt -> (frames, num_pdfs)) in this process; returns utt -> words."""
    decoder = Decoder(graph_dir, model_path, beam=beam, lattice_beam=lattice_beam, max_active=max_active)
    return decode_all(decoder, loglikes, acoustic_scale)[0]


def decode_all(decoder: Decoder, loglikes: Mapping[str, np.ndarray],
               acoustic_scale: float) -> tuple[dict[str, list[str]], DecodeStats]:
    """Decode in-memory matrices with an already loaded Decoder, in this process (sorted utterance order)."""
    utts = sorted(loglikes)
    progress = {"desc": f"decode (acwt {acoustic_scale:g})", "unit": "utt", "disable": len(utts) < 20, "leave": False}
    results = [_decode_timed(decoder, u, loglikes[u], acoustic_scale) for u in tqdm(utts, **progress)]
    return collect(results, acoustic_scale)


# ---------------------------------------------------------------- sharded over jobs

Setting = tuple[float, float]  # (acoustic scale, word penalty)


@dataclass(frozen=True)
class DecodeJob:
    """What a decode worker needs, as paths: a local process and a Dask worker load it the same way."""
    graph_dir: str
    model_path: str
    source: str            # a log-likelihood store (frames x pdfs), or a feature store if `gmm`
    gmm: bool = False      # True: `source` holds features, scored with the GMM in `model_path`
    beam: float = 13.0
    lattice_beam: float = 6.0
    max_active: int = 7000


def decode_store(job: DecodeJob, settings: Sequence[Setting],
                 jobs: Jobs = Jobs()) -> dict[Setting, tuple[dict[str, list[str]], DecodeStats]]:
    """Decode every utterance of `job.source` at each (acoustic scale, word penalty), sharded over `jobs`.

    The utterances are cut into nj contiguous shards; each worker loads the graph once per word
    penalty and decodes its shard at every setting, so tuning a grid costs one graph load per job
    and penalty, not per setting. Hypotheses do not depend on nj (each utterance is decoded alone);
    RTF counts decoder seconds summed over workers.
    """
    utts = sorted(open_feats(job.source).keys)
    if not utts:
        raise AsrKdError(f"{job.source}: no utterances to decode")
    settings = list(dict.fromkeys(settings))
    per_shard = run_shards(decode_shard, split(utts, jobs.nj), jobs, job, settings, desc=f"decode {job.source}")
    return {s: collect([r for shard in per_shard for r in shard[s]], s[0]) for s in settings}


def decode_shard(utts: list[str], job: DecodeJob, settings: list[Setting]) -> dict[Setting, list[tuple]]:
    """One job's share: setting -> [(utt, words, reached final, frames, seconds)] in `utts` order."""
    options = {"beam": job.beam, "lattice_beam": job.lattice_beam, "max_active": job.max_active}
    decoders = {p: Decoder(job.graph_dir, job.model_path, word_penalty=p, **options)
                for p in dict.fromkeys(p for _, p in settings)}
    matrices = load_scores(job, utts, next(iter(decoders.values())).am)
    return {(scale, penalty): [_decode_timed(decoders[penalty], u, matrices[u], scale) for u in utts]
            for scale, penalty in settings}


def load_scores(job: DecodeJob, utts: list[str], am) -> dict[str, np.ndarray]:
    """The (frames, pdfs) matrices a shard decodes: the store's log-likelihoods, or the GMM's on its
    features (a store or a feature view)."""
    store = open_feats(job.source)
    matrices = {u: np.asarray(store[u]) for u in utts}
    if job.gmm:  # one BLAS thread: spinning BLAS threads stalled a tri1 dev decode for 17+ min on the shared machine
        with threadpool_limits(limits=1, user_api="blas"):
            matrices = gmm_loglikes(am, matrices)
    return matrices


def collect(results: list[tuple], acoustic_scale: float) -> tuple[dict[str, list[str]], DecodeStats]:
    """Hypotheses and stats of per-utterance results; utterances without a final state are logged."""
    hyps, stats = {}, DecodeStats()
    for utt, words, ok, frames, seconds in results:
        hyps[utt] = words
        stats.seconds += seconds
        stats.num_utts, stats.num_frames = stats.num_utts + 1, stats.num_frames + frames
        if not ok:
            stats.num_failed += 1
            log.warning("utterance %s: no path reached a final state; using the partial best path", utt)
    log.info("decoded %d utterances (acoustic scale %g), %d without a final state, real-time factor %.4f",
             stats.num_utts, acoustic_scale, stats.num_failed, stats.real_time_factor)
    return hyps, stats


def _decode_timed(decoder: Decoder, utt: str, matrix, acoustic_scale: float):
    matrix = np.asarray(matrix)
    start = time.perf_counter()
    words, ok = decoder.decode_one(utt, matrix, acoustic_scale)
    return utt, words, ok, len(matrix), time.perf_counter() - start


def gmm_loglikes(am, feats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(frames, num_pdfs) GMM log-likelihoods per utterance, all Gaussians in one matrix product
    (`gmm_stats.component_loglikes`, the formula GMM training uses), then log-sum-exp over each
    pdf's Gaussians."""
    gmms = [am.get_pdf(pdf) for pdf in range(am.num_pdfs)]
    gconst = np.concatenate([np.asarray(g.gconsts, np.float64) for g in gmms])
    means_invvars = np.concatenate([np.asarray(g.means_invvars, np.float64) for g in gmms])
    inv_vars = np.concatenate([np.asarray(g.inv_vars, np.float64) for g in gmms])
    owner = np.concatenate([np.full(len(g.gconsts), pdf) for pdf, g in enumerate(gmms)])
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    out = {}
    for utt, x in feats.items():
        if x.shape[1] != am.dim:
            raise AsrKdError(f"utterance {utt}: features have dim {x.shape[1]}, the GMM expects {am.dim}")
        per_gauss = component_loglikes(x, gconst, means_invvars, inv_vars)          # (T, G)
        peak = np.maximum.reduceat(per_gauss, starts, axis=1)                        # (T, P)
        summed = np.add.reduceat(np.exp(per_gauss - peak[:, owner]), starts, axis=1)
        out[utt] = (peak + np.log(summed)).astype(np.float32)
    return out


def _check_graph_matches(graph_dir: Path, tree_path: Path) -> None:
    """Refuse a graph built for another tree (its pdf ids would mean something else)."""
    meta_path = graph_dir / "meta.json"
    if not (graph_dir / "HCLG.fst").is_file():
        raise AsrKdError(f"{graph_dir}: no HCLG.fst (run make-graph first)")
    if not tree_path.is_file():
        raise AsrKdError(f"{tree_path}: missing; the decoder needs the model's tree next to it")
    if meta_path.is_file() and read_json(meta_path).get("tree_sha256") != sha256_file(tree_path):
        raise AsrKdError(f"{meta_path}: graph was built for another tree than {tree_path}; rebuild the graph")

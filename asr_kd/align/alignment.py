"""Forced alignment of a set, and the alignment store (docs/ARTIFACTS.md) with priors, CTM and sanity stats.

Store layout (`exp/<gmm>_ali/`): the dir itself is a RaggedStore of int32 pdf ids per frame,
`phones/` and `transitions/` are RaggedStores of phone ids and transition ids, `priors.npy`
(add-one smoothed pdf frequencies), `ctm.txt` (phone CTM), `stats.json`, `failed.txt`.
Utterances that could not be aligned are left out of the store and listed in `failed.txt`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from asr_kd.align.graphs import load_lang, word_ids
from asr_kd.data.feature_view import open_feats, transform_files
from asr_kd.data.store import RaggedStore, expect_kind, load_array, write_store
from asr_kd.config import require
from asr_kd.errors import AsrKdError
from asr_kd.io import make_temp_dir, read_json, replace_dir, sha256_file
from asr_kd.kaldi import gmm
from asr_kd.kaldi.fst import read_fst
from asr_kd.parallel import Jobs, run_shards
from asr_kd.steps.tree import TREE_KEY

log = logging.getLogger(__name__)
GRAPHS_VERSION = b"2: no transition probs\n"  # in the archive names: a run resumed after the change recompiles


@dataclass
class AlignConfig:
    """gmm-align-compiled settings (Kaldi's steps/align_si.sh defaults), plus a last-resort beam."""
    beam: float = 10.0
    retry_beam: float = 40.0
    fail_beam: float = 500.0       # weak models can fail silently at retry_beam (DESIGN.md §3)
    acoustic_scale: float = 0.1
    self_loop_scale: float = 0.1
    transition_scale: float = 1.0
    shard_size: int = 100          # utterances per parallel job (Kaldi's split_data.sh, by count)

    def __post_init__(self):
        require(min(self.beam, self.retry_beam, self.fail_beam, self.acoustic_scale) > 0 and self.shard_size >= 1,
                "align: beams and acoustic_scale must be > 0 and shard_size >= 1")


class UttText(NamedTuple):
    """One utterance of a shard and its transcript; prints as its id (in a failed shard's message)."""
    utt: str
    text: str

    def __str__(self) -> str:
        return self.utt


def utt_shards(texts: dict[str, str], shard_size: int) -> list[list[UttText]]:
    """Contiguous shards of `shard_size` sorted utterances: cut by count, not by the number of jobs,
    so that statistics summed over shards have the same bytes for any --nj."""
    if shard_size < 1:
        raise AsrKdError(f"shard_size must be >= 1 (got {shard_size})")
    items = [UttText(u, t) for u, t in sorted(texts.items())]
    return [items[i:i + shard_size] for i in range(0, len(items), shard_size)]


@dataclass(frozen=True)
class ModelPaths:
    """A GMM system as files, for shards running in other processes: lang dir, tree, model, features."""
    lang_dir: str
    tree: str
    model: str
    feats: str
    graph_dir: str | None = None   # per-shard graph archives are kept here, compiled once per training run
    graph_model: str | None = None  # model the graphs are compiled with (default: `model`); they carry no probs


@dataclass
class ShardAlignment:
    alignments: dict[str, np.ndarray] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    loglike: float = 0.0
    frames: int = 0


def align_set(paths: ModelPaths, shards: list[list[UttText]], cfg: AlignConfig, jobs: Jobs = Jobs(),
              desc: str = "align"):
    """Align every utterance of `shards`, shards in parallel. Returns ({utt: tids}, [failed], avg loglike per frame).

    An alignment counts only if it covers every frame; a failure is retried once at `fail_beam`.
    """
    parts = run_shards(align_shard, shards, jobs, paths, cfg, desc=desc)
    alignments, failed, retried, like, frames = {}, [], [], 0.0, 0
    for part in parts:
        alignments.update(part.alignments)
        failed += part.failed
        retried += part.retried
        like, frames = like + part.loglike, frames + part.frames
    if retried or failed:
        log.warning("%s: %d utterance(s) failed at beam %g/%g and were retried at beam %g: %s; still failed: %d %s",
                    desc, len(retried), cfg.beam, cfg.retry_beam, cfg.fail_beam, " ".join(retried[:20]),
                    len(failed), " ".join(failed[:20]))
    return alignments, failed, like / max(frames, 1)


def align_shard(items: list[UttText], paths: ModelPaths, cfg: AlignConfig) -> ShardAlignment:
    """gmm-align-compiled over one shard, in a worker: model, tree and graphs come from `paths`."""
    tm, am = load_model(paths.model, paths.tree)
    graphs = shard_graphs(items, paths)
    feats, out = open_feats(paths.feats), ShardAlignment()
    for utt, _ in items:
        x = feats[utt]
        tids, like = _align(am, tm, graphs[utt], x, cfg, cfg.beam, cfg.retry_beam)
        if tids is None and cfg.fail_beam > cfg.retry_beam:
            out.retried.append(utt)
            tids, like = _align(am, tm, graphs[utt], x, cfg, cfg.fail_beam, 0.0)
        if tids is None:
            out.failed.append(utt)
            continue
        out.alignments[utt], out.loglike, out.frames = tids, out.loglike + like, out.frames + len(tids)
    return out


def _align(am, tm, graph, x, cfg: AlignConfig, beam: float, retry_beam: float):
    return gmm.align_compiled(am, tm, graph, x, beam=beam, retry_beam=retry_beam,
                              acoustic_scale=cfg.acoustic_scale, transition_scale=cfg.transition_scale,
                              self_loop_scale=cfg.self_loop_scale)


def _file_key(path: str) -> tuple:
    st = os.stat(path)
    return path, st.st_ino, st.st_mtime_ns, st.st_size


def load_model(model_path: str, tree_path: str):
    """(tm, am) of a model file, cached per file version (a worker reads each model once)."""
    tm, am, _ = _load_model(_file_key(model_path), _file_key(tree_path))
    return tm, am


@functools.lru_cache(maxsize=2)
def _load_model(model_key: tuple, tree_key: tuple):
    tree = gmm.read_tree(tree_key[0])
    return (*gmm.read_model(model_key[0], tree), tree)


@functools.lru_cache(maxsize=2)
def _compiler(lang_dir: str, model_key: tuple, tree_key: tuple):
    """(lang, compiler, what it points to): the C++ compiler keeps references to the transition
    model, tree and L.fst, so they are cached with it (a freed one crashes the next compilation)."""
    lang = load_lang(lang_dir)
    tm, _, tree = _load_model(model_key, tree_key)
    lex = read_fst(lang.path / "L.fst")
    return lang, gmm.graph_compiler(tm, tree, lex, lang.disambig), (tm, tree, lex)


def shard_graphs(items: list[UttText], paths: ModelPaths) -> dict:
    """Training graphs of a shard: read from `paths.graph_dir` if compiled before, else compiled (and kept there).

    The archive is named by a hash of the tree and the shard's utterances and transcripts, so a
    changed shard or tree never reads another's graphs; graphs do not depend on the model's probabilities, so one
    compilation serves every pass of a run.
    """
    archive = None
    if paths.graph_dir is not None:
        digest = hashlib.sha1(GRAPHS_VERSION + Path(paths.tree).read_bytes()
                              + "".join(f"{u} {t}\n" for u, t in items).encode())
        digest = digest.hexdigest()[:20]
        archive = Path(paths.graph_dir) / f"{digest}.ark"
        if archive.is_file():
            return gmm.read_graphs(archive)
    lang, compiler, _ = _compiler(paths.lang_dir, _file_key(paths.graph_model or paths.model), _file_key(paths.tree))
    graphs = {utt: compiler.compile_graph_from_text(word_ids(lang, utt, text)) for utt, text in items}
    if archive is not None:
        archive.parent.mkdir(parents=True, exist_ok=True)
        gmm.write_graphs(archive, graphs.items())
    return graphs


# ---------------------------------------------------------------- frame-level views

def phone_segments(phones: np.ndarray, starts: np.ndarray) -> list[tuple[int, int, int]]:
    """(phone, first frame, num frames) for each phone occurrence, from per-frame phones and start flags."""
    starts = starts.copy()
    starts[0] = True
    starts[1:] |= phones[1:] != phones[:-1]
    begin = np.flatnonzero(starts)
    ends = np.append(begin[1:], len(phones))
    return [(int(phones[b]), int(b), int(e - b)) for b, e in zip(begin, ends)]


def phone_starts(hmm_states: np.ndarray) -> np.ndarray:
    """True where a new phone instance begins: HMM state 0 entered from another state or phone.

    Independent of self-loop reordering; assumes (as Kaldi topologies do) that state 0 is not
    re-entered within a phone and is not also its last state. Phone changes are added by
    `phone_segments`.
    """
    starts = hmm_states == 0
    starts[1:] &= hmm_states[:-1] != 0
    return starts


def priors_from_counts(counts: np.ndarray) -> np.ndarray:
    """Add-one smoothed pdf frequencies: no pdf gets a zero prior (log prior must stay finite)."""
    counts = np.asarray(counts, np.float64) + 1.0
    return counts / counts.sum()


# ---------------------------------------------------------------- the store

def write_alignment_store(out_dir: str | Path, labels: dict[str, dict[str, np.ndarray]], *, num_pdfs: int,
                          feats: RaggedStore, model_path: str | Path | None, source: str,
                          failed: list[str] = (), phone_names: dict[int, str] | None = None,
                          silence_phones: list[int] = (), extra_files: dict[str, Path] | None = None,
                          tree_path: str | Path | None = None) -> RaggedStore:
    """Write the alignment store atomically. `labels[utt]` has "pdfs" and optionally "phones" +
    "starts" and "transitions" (per-frame arrays, see `frame_labels`); frame counts are checked
    against `feats`. Without phones (pdf-only imports) there is no phones/, CTM or phone stats.
    Meta records `tree_sha256` of `tree_path`: the tree the pdf ids belong to (asr_kd.steps.tree)."""
    for utt, lab in labels.items():
        if len(lab["pdfs"]) != feats.num_rows(utt):
            raise AsrKdError(f"utterance {utt}: alignment has {len(lab['pdfs'])} frames, features "
                             f"{feats.path} have {feats.num_rows(utt)}")
        if len(lab["pdfs"]) and (lab["pdfs"].min() < 0 or lab["pdfs"].max() >= num_pdfs):
            raise AsrKdError(f"utterance {utt}: pdf id out of range [0, {num_pdfs})")
    out_dir = Path(out_dir)
    utts = sorted(labels)
    counts = np.zeros(num_pdfs, np.int64)
    for utt in utts:
        counts += np.bincount(labels[utt]["pdfs"], minlength=num_pdfs)
    fshift = feats.meta.get("frame_shift_ms", 10.0)
    meta = {"num_pdfs": int(num_pdfs), "model_sha256": sha256_file(model_path) if model_path else None,
            "frame_shift_ms": fshift, "feature_config_hash": feats.meta.get("config_hash"),
            "feature_store": str(feats.path), "source": source, "num_failed": len(failed),
            TREE_KEY: sha256_file(tree_path) if tree_path else None}
    tmp = make_temp_dir(out_dir)
    try:
        write_store(tmp, ((u, labels[u]["pdfs"]) for u in utts), meta, dtype="int32")
        has = {k: bool(utts) and all(k in labels[u] for u in utts) for k in ("phones", "transitions")}
        for name in ("phones", "transitions"):
            if has[name]:
                write_store(tmp / name, ((u, labels[u][name]) for u in utts), meta, dtype="int32")
        np.save(tmp / "priors.npy", priors_from_counts(counts))
        (tmp / "failed.txt").write_text("".join(f"{u}\n" for u in failed), encoding="utf-8")
        segments = {u: phone_segments(labels[u]["phones"], labels[u]["starts"]) for u in utts} if has["phones"] else {}
        if has["phones"]:
            (tmp / "ctm.txt").write_text(format_ctm(segments, fshift / 1000.0, phone_names or {}), encoding="utf-8")
        stats = alignment_stats(segments, labels, silence_phones, failed, phone_names or {})
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RaggedStore(out_dir)


def format_ctm(segments: dict[str, list[tuple[int, int, int]]], shift_s: float, names: dict[int, str]) -> str:
    """Phone CTM lines: `utt 1 start duration phone` (seconds)."""
    return "".join(f"{utt} 1 {b * shift_s:.2f} {n * shift_s:.2f} {names.get(p, p)}\n"
                   for utt, segs in segments.items() for p, b, n in segs)


def alignment_stats(segments, labels, silence_phones, failed, names) -> dict:
    """Sanity numbers: silence fraction, per-phone mean duration in frames, failures."""
    frames = sum(len(lab["pdfs"]) for lab in labels.values())
    sil = sum(int(np.isin(lab["phones"], list(silence_phones)).sum()) for lab in labels.values() if "phones" in lab)
    durations: dict[int, list[int]] = {}
    for segs in segments.values():
        for p, _, n in segs:
            durations.setdefault(p, []).append(n)
    return {"num_aligned": len(labels), "num_failed": len(failed), "num_frames": frames,
            "silence_fraction": sil / max(frames, 1),
            "phone_mean_frames": {str(names.get(p, p)): round(float(np.mean(d)), 2) for p, d in sorted(durations.items())},
            "phone_count": {str(names.get(p, p)): len(d) for p, d in sorted(durations.items())}}


def frame_labels(pdfs, phones, hmm_states, tids=None) -> dict[str, np.ndarray]:
    """Per-frame label arrays of one utterance, as `write_alignment_store` takes them."""
    labels = {"pdfs": np.asarray(pdfs, np.int32), "phones": np.asarray(phones, np.int32),
              "starts": phone_starts(np.asarray(hmm_states))}
    if tids is not None:
        labels["transitions"] = np.asarray(tids, np.int32)
    return labels


def labels_from_tids(tids: np.ndarray, table: gmm.TransitionTable) -> dict[str, np.ndarray]:
    return frame_labels(table.pdf[tids], table.phone[tids], table.hmm_state[tids], tids)


def format_stats(ali_dir: str | Path) -> str:
    """Printable summary of `stats.json` + priors for `asr-kd ali-stats`."""
    ali_dir = Path(ali_dir)
    meta = expect_kind(RaggedStore(ali_dir), "alignment", "an alignment dir").meta
    stats = read_json(ali_dir / "stats.json")
    priors = load_array(ali_dir / "priors.npy")
    durs = " ".join(f"{p}:{d}" for p, d in stats["phone_mean_frames"].items())
    return (f"{ali_dir}: {stats['num_aligned']} utterances aligned, {stats['num_failed']} failed, "
            f"{stats['num_frames']} frames\n"
            f"num_pdfs {meta['num_pdfs']} (priors: {len(priors)} values, sum {priors.sum():.6f}, "
            f"min {priors.min():.3g}), source {meta['source']}\n"
            f"silence fraction {stats['silence_fraction']:.3f}\n"
            f"mean phone duration (frames): {durs}\n")


def align_data(feats: RaggedStore | str | Path, texts: dict[str, str], lang_dir: str | Path,
               model_dir: str | Path, out_dir: str | Path, cfg: AlignConfig | None = None,
               jobs: Jobs = Jobs()) -> RaggedStore:
    """steps/align_si.sh: align a set with `model_dir/final.mdl` + `tree` into an alignment store.

    Shards of `cfg.shard_size` utterances run as `jobs` says (each compiles its own graphs). The
    model and tree are copied into the store, so it is self-contained (as a Kaldi ali dir).
    """
    cfg = cfg or AlignConfig()
    feats = feats if not isinstance(feats, (str, Path)) else open_feats(feats)
    model_dir, lang = Path(model_dir), load_lang(lang_dir)
    tree = gmm.read_tree(model_dir / "tree")
    tm, am = gmm.read_model(model_dir / "final.mdl", tree)
    missing = [u for u in texts if u not in feats]
    if missing:
        log.warning("%d utterances have no features in %s (e.g. %s); skipped", len(missing), feats.path, missing[0])
    paths = ModelPaths(str(lang.path), str(model_dir / "tree"), str(model_dir / "final.mdl"), str(feats.path))
    shards = utt_shards({u: t for u, t in texts.items() if u in feats}, cfg.shard_size)
    alignments, failed, like = align_set(paths, shards, cfg, jobs, desc=f"align {Path(out_dir).name}")
    log.info("aligned %d utterances (%d failed), avg loglike per frame %.3f", len(alignments), len(failed), like)
    table = gmm.TransitionTable(tm, tree)
    labels = {u: labels_from_tids(t, table) for u, t in alignments.items()}
    return write_alignment_store(out_dir, labels, num_pdfs=am.num_pdfs, feats=feats,
                                 model_path=model_dir / "final.mdl", source="gmm", failed=failed,
                                 phone_names=lang.phone_names, silence_phones=lang.silence,
                                 extra_files={"final.mdl": model_dir / "final.mdl", "tree": model_dir / "tree",
                                              **transform_files(model_dir)},
                                 tree_path=model_dir / "tree")

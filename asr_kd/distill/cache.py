"""Cached teacher targets: computed once per utterance, keyed by utterance id, checked on load.

Directory layout (written atomically by `write_cache`)::

    meta.json  {"format", "target": "probs"|"logits", "combination", "temperature" (null for logits),
                "teacher_sha256": [...sorted], "feature_config_hash", "num_pdfs", "top_k" (null = full),
                "input_specs", "num_utts", "num_frames", "bytes", "full_fp16_bytes",
                "kept_mass_mean", "kl_topk_full_mean"}
    values/    RaggedStore float16, (frames, num_pdfs) or (frames, top_k)
    indices/   RaggedStore int16 (int32 past 32767 pdfs), (frames, top_k): the pdf ids of `values` (top-k caches only)

An `arith` cache holds probabilities at one T; a `geo` cache holds the mean member logits, so it
serves any T. Top-k keeps the k largest entries: probabilities are renormalised over them, logits
are renormalised implicitly by the softmax over the support. `CachedTeacher` refuses a cache made
by another teacher, combination, temperature or feature config, or missing an utterance.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asr_kd.data.store import RaggedStore, RaggedStoreWriter
from asr_kd.distill.losses import Targets
from asr_kd.distill.teachers import OnlineTeacher, TeacherSpec
from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path, read_json, write_json
from asr_kd.nnet.ensemble import combine_logits
from asr_kd.nnet.frames import FrameData

log = logging.getLogger(__name__)
CACHE_FORMAT = "asr_kd.teacher_cache/1"


@dataclass
class CacheReport:
    """Size and top-k fidelity of a written cache (KL at the cache temperature, T=1 for geo)."""

    num_utts: int
    num_frames: int
    bytes: int
    full_fp16_bytes: int
    kept_mass_mean: float | None = None
    kl_topk_full_mean: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def write_cache(path: str | os.PathLike, teacher: OnlineTeacher, data: FrameData, *, temperature: float | None,
                feature_config_hash: str, top_k: int | None = None, batch_frames: int = 8192) -> CacheReport:
    """Run `teacher` on every utterance of `data` and store its targets keyed by utterance id.

    For top-k, reports the mean kept probability mass m and mean KL(top-k || full) = mean -log m
    (KL(full || top-k) is infinite: the renormalised top-k distribution is zero off its support).
    """
    if teacher.spec is None:
        raise AsrKdError(f"{path}: cannot cache a teacher without weight checksums (load it with OnlineTeacher.load)")
    target = "logits" if teacher.combination == "geo" else "probs"
    if target == "probs" and temperature is None:
        raise AsrKdError(f"{path}: an 'arith' cache stores probabilities at one temperature; give --temperature")
    t_stats = float(temperature) if target == "probs" else 1.0
    kept_sum = kl_sum = 0.0
    with atomic_path(path, is_dir=True) as tmp:
        values = RaggedStoreWriter(tmp / "values", "float16")
        indices = None
        for u, utt in enumerate(tqdm(data.utt_ids, desc="cache teacher", leave=False, disable=None, mininterval=5)):
            frames = data.utt_frames(u)
            member = torch.cat([teacher.member_logits(data, chunk) for chunk in frames.split(batch_frames)], dim=1)
            full = member.mean(0) if target == "logits" else combine_logits(member, t_stats, "arith").exp()
            if top_k:
                vals, idx = full.topk(min(top_k, teacher.ensemble.num_pdfs), dim=-1)
                probs = torch.softmax(full / t_stats, -1) if target == "logits" else full
                mass = probs.gather(-1, idx).sum(-1).double()
                kept_sum += mass.sum().item()
                kl_sum += -mass.clamp_min(1e-300).log().sum().item()
                if target == "probs":
                    vals = vals / vals.sum(-1, keepdim=True)
                if indices is None:  # int16 ids while they fit: 4 bytes per kept entry, not 6
                    indices = RaggedStoreWriter(tmp / "indices", "int16" if teacher.ensemble.num_pdfs < 2**15 else "int32")
                indices.add(utt, idx.cpu().numpy())
                full = vals
            values.add(utt, full.cpu().numpy())
        meta = {"format": CACHE_FORMAT, "target": target, "combination": teacher.combination,
                "temperature": None if target == "logits" else t_stats,
                "teacher_sha256": list(teacher.spec.sha256), "feature_config_hash": feature_config_hash,
                "num_pdfs": teacher.ensemble.num_pdfs, "top_k": top_k or None, "input_specs": teacher.input_specs}
        values.close(meta)
        if indices is not None:
            indices.close(meta)
        report = _report(tmp, data, teacher.ensemble.num_pdfs, kept_sum, kl_sum, bool(top_k))
        write_json(tmp / "meta.json", {**meta, **report.as_dict()})
    log.info("teacher cache %s: %d utts, %d frames, %.2f MB (full fp16: %.2f MB)%s", path, report.num_utts,
             report.num_frames, report.bytes / 1e6, report.full_fp16_bytes / 1e6,
             f"; top-{top_k}: mean kept mass {report.kept_mass_mean:.4f}, mean KL(top-k||full) "
             f"{report.kl_topk_full_mean:.4f} nats at T={t_stats:g}" if report.kept_mass_mean is not None else "")
    return report


def _report(tmp: Path, data: FrameData, num_pdfs: int, kept_sum: float, kl_sum: float, top_k: bool) -> CacheReport:
    size = sum(f.stat().st_size for f in tmp.rglob("*.bin"))
    n = data.num_frames
    report = CacheReport(len(data.utt_ids), n, size, n * num_pdfs * 2)
    if top_k and n:
        report.kept_mass_mean, report.kl_topk_full_mean = kept_sum / n, kl_sum / n
    return report


def feature_config_hash(feats_path: str | os.PathLike) -> str:
    """The feature store's config hash (what a cache and a transfer set must agree on)."""
    meta_file = Path(feats_path) / "meta.json"
    value = read_json(meta_file).get("config_hash") if meta_file.is_file() else None
    if not value:
        raise AsrKdError(f"{meta_file}: no feature config_hash (not a feature store?)")
    return value


class CachedTeacher:
    """Teacher targets read from a cache; `attach` maps a transfer set's rows onto cache rows."""

    def __init__(self, path: str | os.PathLike, *, temperature: float | None = None, spec: TeacherSpec | None = None,
                 feature_config_hash: str | None = None, device: str | torch.device = "cpu"):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise AsrKdError(f"{self.path}: not a teacher cache (no meta.json); run `asr-kd cache-teacher` first")
        self.meta = read_json(meta_file)
        if self.meta.get("format") != CACHE_FORMAT:
            raise AsrKdError(f"{meta_file}: format {self.meta.get('format')!r}, expected {CACHE_FORMAT!r}")
        check_cache_meta(self.meta, meta_file, temperature=temperature, spec=spec, feature_config_hash=feature_config_hash)
        self.device = torch.device(device)
        self.combination = self.meta["combination"]
        self.values = RaggedStore(self.path / "values")
        self.indices = RaggedStore(self.path / "indices") if self.meta["top_k"] else None
        self._values = torch.from_numpy(np.array(self.values.data)).to(self.device)
        self._indices = torch.from_numpy(np.array(self.indices.data)).to(self.device) if self.indices else None
        self._row_map: torch.Tensor | None = None

    @property
    def num_pdfs(self) -> int:
        return int(self.meta["num_pdfs"])

    def to(self, device: str | torch.device) -> "CachedTeacher":
        self.device = torch.device(device)
        self._values = self._values.to(self.device)
        self._indices = self._indices.to(self.device) if self._indices is not None else None
        self._row_map = self._row_map.to(self.device) if self._row_map is not None else None
        return self

    def attach(self, data) -> "CachedTeacher":
        """Map the rows of `data` (a FrameData: `.utt_ids`, `.offsets`) to cache rows; checks coverage."""
        utt_ids, offsets = data.utt_ids, np.asarray(torch.as_tensor(data.offsets).cpu(), dtype=np.int64)
        missing = [u for u in utt_ids if u not in self.values]
        if missing:
            raise AsrKdError(f"{self.path}: {len(missing)} utterance(s) of the transfer set are not in the cache, "
                             f"e.g. {missing[:3]}; re-run cache-teacher on this set")
        row_map = np.empty(int(offsets[-1]), dtype=np.int64)
        for i, utt in enumerate(utt_ids):
            n_set = int(offsets[i + 1] - offsets[i])
            j = self.values.index(utt)
            start, n_cache = int(self.values.offsets[j]), self.values.num_rows(utt)
            if n_set != n_cache:
                raise AsrKdError(f"{self.path}: utterance {utt!r} has {n_cache} cached frames but {n_set} feature frames; "
                                 "the cache was made from other features")
            row_map[offsets[i]:offsets[i + 1]] = np.arange(start, start + n_cache)
        self._row_map = torch.from_numpy(row_map).to(self.device)
        return self

    def targets(self, batch, temperature: float) -> Targets:
        if self._row_map is None:
            raise AsrKdError(f"{self.path}: CachedTeacher.attach(utt_ids, offsets) must be called before training")
        check_cache_meta(self.meta, self.path / "meta.json", temperature=temperature)
        rows = self._row_map[batch.frame_index.to(self.device)]
        vals = self._values[rows].float()
        if self._indices is not None:
            fill = float("-inf") if self.meta["target"] == "logits" else 0.0
            dense = vals.new_full((len(rows), self.num_pdfs), fill)
            vals = dense.scatter_(1, self._indices[rows].long(), vals)
        vals = vals.to(batch.y.device)
        if self.meta["target"] == "logits":
            return Targets(labels=batch.y, logits=vals)
        return Targets(labels=batch.y, probs=vals / vals.sum(-1, keepdim=True))  # renormalise after fp16


def check_cache_meta(meta: dict, where, *, temperature: float | None = None, spec: TeacherSpec | None = None,
                     feature_config_hash: str | None = None) -> None:
    """Refuse a cache whose producer differs from what the caller expects; the message names what differs."""
    problems = []
    if spec is not None:
        if meta["combination"] != spec.combination:
            problems.append(f"combination: cache {meta['combination']!r}, requested {spec.combination!r}")
        if sorted(meta["teacher_sha256"]) != sorted(spec.sha256):
            problems.append("teacher: member weight checksums differ (cache "
                            f"{[h[:12] for h in meta['teacher_sha256']]}, requested {[h[:12] for h in spec.sha256]})")
    cached_t = meta["temperature"]
    if temperature is not None and cached_t is not None and abs(cached_t - temperature) > 1e-9:
        problems.append(f"temperature: cache holds '{meta['combination']}' probabilities at T={cached_t:g}, "
                        f"the loss asks T={temperature:g} (re-cache, or cache a 'geo' teacher: its logits serve any T)")
    if feature_config_hash is not None and meta["feature_config_hash"] != feature_config_hash:
        problems.append(f"features: cache made from feature config {meta['feature_config_hash']}, "
                        f"transfer set has {feature_config_hash}")
    if problems:
        raise AsrKdError(f"{where}: teacher cache does not match: " + "; ".join(problems))

"""Kaldi-definition acoustic features for a data dir: fbank or MFCC, per-speaker CMVN, deltas.

    store = compute_features("data/train", "data/fbank/train", FeatureConfig(), CmvnConfig())
    feats = load_features("data/fbank/train", expected_hash=...)["utt-001"]   # (frames, dim)

The numbers follow Kaldi's `compute-fbank-feats` / `compute-mfcc-feats`, `compute-cmvn-stats
--spk2utt`, `apply-cmvn` and `add-deltas` (in that order: CMVN on the static features, deltas
after it, as Kaldi's GMM recipes do), so alignments and models made with Kaldi and with this
package see the same input. The result is one RaggedStore in sorted utterance order, written
atomically: a failure leaves no half store. Pass 1 (audio -> static features, the costly part)
runs in shards of utterances through `asr_kd.parallel` (local processes or a Dask cluster); the
shards' stores are concatenated in utterance order, so the bytes do not depend on the job count.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from asr_kd.config import to_dict
from asr_kd.data.audio import load_utterance, truncation_warning
from asr_kd.data.datadir import DataDir, load_datadir
from asr_kd.data.store import RaggedStore, RaggedStoreWriter
from asr_kd.errors import AsrKdError
from asr_kd.io import sha256_json
from asr_kd.parallel import Jobs, run_shards, split

log = logging.getLogger(__name__)

KINDS = ("fbank", "mfcc")
BACKENDS = ("kaldi-native-fbank", "torchaudio")
CMVN_UNITS = ("speaker", "utterance", "none")
INT16_SCALE = 32768.0  # Kaldi computes on int16-valued samples; soundfile gives [-1, 1)
VAR_FLOOR = 1.0e-20    # Kaldi apply-cmvn's variance floor


@dataclass
class FeatureConfig:
    """What to compute. `None` fields take the per-kind default (see `resolved`)."""
    kind: str = "fbank"                  # "fbank" | "mfcc"
    num_bins: int | None = None          # mel bins: 40 for fbank, 23 for mfcc (Kaldi's mfcc default)
    num_ceps: int = 13                   # mfcc only
    cepstral_lifter: float = 22.0        # mfcc only
    use_energy: bool = False
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    sample_rate: int = 16000
    dither: float = 0.0                  # Kaldi's default is 1.0 (random); 0 keeps features reproducible
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    low_freq: float = 20.0
    high_freq: float = 0.0               # 0: Nyquist; negative: offset from Nyquist
    snip_edges: bool = True
    deltas: int = 0                      # 0: static only; 2: + delta + delta-delta (window 2)
    delta_window: int = 2
    backend: str = "kaldi-native-fbank"  # | "torchaudio" (only where torchaudio imports)
    dtype: str | None = None             # storage: float16 for fbank, float32 for mfcc (GMM input)
    resample: bool = False               # resample audio at another rate instead of refusing it
    channel: int | None = None           # which channel of multi-channel audio (None: mono audio only)

    def resolved(self) -> "FeatureConfig":
        """A copy with every per-kind default filled in and values checked: what the meta records."""
        if self.kind not in KINDS:
            raise AsrKdError(f"feature kind {self.kind!r}: expected one of {KINDS}")
        if self.backend not in BACKENDS:
            raise AsrKdError(f"feature backend {self.backend!r}: expected one of {BACKENDS}")
        if self.sample_rate <= 0 or self.frame_length_ms <= 0 or self.frame_shift_ms <= 0 or \
                (self.num_bins is not None and self.num_bins < 1) or self.num_ceps < 1:
            raise AsrKdError(f"need sample_rate, frame_length_ms, frame_shift_ms > 0 and num_bins, num_ceps >= 1; got "
                             f"{self.sample_rate}, {self.frame_length_ms}, {self.frame_shift_ms}, {self.num_bins}, "
                             f"{self.num_ceps}")
        if self.channel is not None and self.channel < 0:
            raise AsrKdError(f"channel must be >= 0 (or null for mono audio), got {self.channel}")
        if self.deltas < 0 or self.delta_window < 1:
            raise AsrKdError(f"deltas={self.deltas}, delta_window={self.delta_window}: need deltas >= 0, window >= 1")
        num_bins = self.num_bins or (40 if self.kind == "fbank" else 23)
        dtype = self.dtype or ("float16" if self.kind == "fbank" else "float32")
        if dtype not in ("float16", "float32"):
            raise AsrKdError(f"feature dtype {dtype!r}: expected float16 or float32")
        return replace(self, num_bins=num_bins, dtype=dtype)

    def frame_length(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    def frame_shift(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    def static_dim(self) -> int:
        base = self.num_ceps if self.kind == "mfcc" else self.resolved().num_bins
        return base + (1 if self.use_energy else 0)

    def dim(self) -> int:
        return self.static_dim() * (self.deltas + 1)


@dataclass
class CmvnConfig:
    """Cepstral mean (and variance) normalisation, Kaldi's apply-cmvn, with stats per speaker."""
    mean: bool = True
    var: bool = False
    per: str = "speaker"  # "speaker" | "utterance" | "none"

    def check(self) -> "CmvnConfig":
        if self.per not in CMVN_UNITS:
            raise AsrKdError(f"cmvn per {self.per!r}: expected one of {CMVN_UNITS}")
        return self

    @property
    def active(self) -> bool:
        return self.per != "none" and (self.mean or self.var)


# ---------------------------------------------------------------- numeric core

def num_frames(num_samples: int, cfg: FeatureConfig) -> int:
    """Kaldi's NumFrames: how many frames `num_samples` samples give."""
    length, shift = cfg.frame_length(), cfg.frame_shift()
    if cfg.snip_edges:
        return 0 if num_samples < length else 1 + (num_samples - length) // shift
    return (num_samples + shift // 2) // shift


def compute_static(samples: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(frames, static_dim) float32 features of float samples in [-1, 1) at cfg.sample_rate."""
    cfg = cfg.resolved()
    scaled = np.asarray(samples, dtype=np.float32) * INT16_SCALE
    if cfg.backend == "torchaudio":
        return torchaudio_features(scaled, cfg)
    return knf_features(scaled, cfg)


def knf_options(cfg: FeatureConfig):
    """kaldi-native-fbank options, every field set explicitly (its defaults differ from ours)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions() if cfg.kind == "fbank" else knf.MfccOptions()
    frame = opts.frame_opts
    frame.samp_freq = float(cfg.sample_rate)
    frame.frame_length_ms, frame.frame_shift_ms = cfg.frame_length_ms, cfg.frame_shift_ms
    frame.dither, frame.preemph_coeff = cfg.dither, cfg.preemph_coeff
    frame.remove_dc_offset, frame.window_type, frame.snip_edges = cfg.remove_dc_offset, cfg.window_type, cfg.snip_edges
    opts.mel_opts.num_bins = cfg.num_bins
    opts.mel_opts.low_freq, opts.mel_opts.high_freq = cfg.low_freq, cfg.high_freq
    opts.use_energy = cfg.use_energy
    if cfg.kind == "mfcc":
        opts.num_ceps, opts.cepstral_lifter = cfg.num_ceps, cfg.cepstral_lifter
    return opts


def knf_features(scaled: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    import kaldi_native_fbank as knf

    opts = knf_options(cfg)
    extractor = knf.OnlineFbank(opts) if cfg.kind == "fbank" else knf.OnlineMfcc(opts)
    extractor.accept_waveform(float(cfg.sample_rate), scaled)
    extractor.input_finished()
    count = extractor.num_frames_ready
    if count == 0:
        return np.zeros((0, cfg.static_dim()), np.float32)
    return np.stack([extractor.get_frame(i) for i in range(count)]).astype(np.float32, copy=False)


def torchaudio_features(scaled: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    try:
        import torch
        from torchaudio.compliance import kaldi
    except Exception as e:  # ImportError, or the OSError a CUDA-only wheel raises next to CPU torch
        raise AsrKdError(f"feature backend 'torchaudio' is not usable here ({type(e).__name__}: {e}); "
                         "use backend=kaldi-native-fbank") from None
    common = dict(sample_frequency=cfg.sample_rate, frame_length=cfg.frame_length_ms, frame_shift=cfg.frame_shift_ms,
                  dither=cfg.dither, preemphasis_coefficient=cfg.preemph_coeff, remove_dc_offset=cfg.remove_dc_offset,
                  window_type=cfg.window_type, num_mel_bins=cfg.num_bins, low_freq=cfg.low_freq,
                  high_freq=cfg.high_freq, snip_edges=cfg.snip_edges, use_energy=cfg.use_energy)
    wave = torch.from_numpy(scaled).unsqueeze(0)
    if cfg.kind == "fbank":
        out = kaldi.fbank(wave, **common)
    else:
        out = kaldi.mfcc(wave, num_ceps=cfg.num_ceps, cepstral_lifter=cfg.cepstral_lifter, **common)
    return out.numpy().astype(np.float32, copy=False)


def delta_windows(order: int, window: int = 2) -> list[np.ndarray]:
    """Kaldi's DeltaFeatures scales: w0 = [1], w_i = w_{i-1} convolved with j / sum(j^2), j = -N..N."""
    first = np.arange(-window, window + 1, dtype=np.float64)
    first /= np.sum(first**2)
    scales = [np.ones(1)]
    for _ in range(order):
        scales.append(np.convolve(scales[-1], first))
    return scales


def add_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi add-deltas: [x, delta x, delta^2 x, ...] with edge frames replicated."""
    if order == 0:
        return feats
    feats = np.asarray(feats, dtype=np.float64)
    blocks = [feats]
    for scales in delta_windows(order, window)[1:]:
        reach = (len(scales) - 1) // 2
        padded = np.pad(feats, ((reach, reach), (0, 0)), mode="edge")
        # Kaldi: out[t] = sum_j scales[j + reach] * x[clamp(t + j)]
        blocks.append(sum(s * padded[k : k + len(feats)] for k, s in enumerate(scales) if s != 0.0))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def cmvn_stats(feats: np.ndarray) -> np.ndarray:
    """Kaldi compute-cmvn-stats layout, (2, dim + 1) float64: [sum x, count; sum x^2, 0]."""
    feats = np.asarray(feats, dtype=np.float64)
    stats = np.zeros((2, feats.shape[1] + 1))
    stats[0, :-1], stats[0, -1] = feats.sum(axis=0), len(feats)
    stats[1, :-1] = np.square(feats).sum(axis=0)
    return stats


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, cfg: CmvnConfig) -> np.ndarray:
    """Kaldi apply-cmvn: subtract the mean; with var, also divide by the std (variance floored)."""
    count = stats[0, -1]
    if count < 1:
        raise AsrKdError("CMVN stats have a count below 1 (no frames)")
    mean = stats[0, :-1] / count
    out = np.asarray(feats, dtype=np.float64)
    if cfg.var:
        var = np.maximum(stats[1, :-1] / count - mean**2, VAR_FLOOR)
        out = (out - mean) / np.sqrt(var)
    elif cfg.mean:
        out = out - mean
    return out.astype(np.float32)


# ---------------------------------------------------------------- pass 1, one shard per job

def utterance_features(data: DataDir, utt: str, cfg: FeatureConfig) -> tuple[np.ndarray | None, int, str | None]:
    """(static features, num_samples, error message) of one utterance; bad input comes back as a message."""
    try:
        samples = load_utterance(data, utt, expected_rate=cfg.sample_rate, resample=cfg.resample, channel=cfg.channel)
        feats = compute_static(samples, cfg)
    except AsrKdError as e:
        return None, 0, str(e)
    if len(feats) == 0:
        return None, len(samples), (f"utterance '{utt}': {len(samples)} samples is shorter than one frame "
                                    f"({cfg.frame_length()} samples)")
    expected = num_frames(len(samples), cfg)
    if len(feats) != expected:  # a backend disagreeing with Kaldi's framing is a bug, not bad input
        raise RuntimeError(f"utterance '{utt}': {len(feats)} frames, Kaldi's formula gives {expected}")
    return feats, len(samples), None


def shard_path(shard_root: str | os.PathLike, utts: list[str]) -> Path:
    """Where the scratch store of a shard lives: named by its utterance list, so any nj finds its own."""
    return Path(shard_root) / sha256_json(utts)[:16]


def features_shard(utts: list[str], data_path: str, cfg: FeatureConfig, shard_root: str, skip_bad: bool) -> list[dict]:
    """Static float32 features of `utts` into their shard store; returns the skipped utterances.

    Runs in a worker (a local process or a Dask worker), which reads the data dir from its path. A
    finished shard's store stays until the whole set is done, so a re-run after a failure or a lost
    worker recomputes only the shards that are missing (its meta says which utterances and config).
    """
    out = shard_path(shard_root, utts)
    identity = {"utts_sha256": sha256_json(utts), "config_hash": sha256_json(to_dict(cfg)), "source": data_path}
    if (out / "meta.json").is_file():
        done = RaggedStore(out).meta
        if all(done.get(k) == v for k, v in identity.items()):
            return done["skipped"] + done.get("warnings", [])
    data = load_datadir(data_path)
    skipped, warnings, num_samples = [], [], []
    with RaggedStoreWriter(out, "float32") as writer:
        for utt in utts:
            truncated = truncation_warning(data, utt)
            if truncated is not None:
                warnings.append({"utt": utt, "warning": truncated})
            feats, count, error = utterance_features(data, utt, cfg)
            if error is not None:
                if not skip_bad:
                    raise AsrKdError(f"{data.path}: {error}")
                log.warning("skipping %s", error)
                skipped.append({"utt": utt, "reason": error})
                continue
            writer.add(utt, feats)
            num_samples.append(count)
        np.save(writer.tmp / "num_samples.npy", np.asarray(num_samples, dtype=np.int64))
        writer.close({**identity, "what": "static features of one shard", "skipped": skipped, "warnings": warnings})
    return skipped + warnings


# ---------------------------------------------------------------- compute a data dir

def default_num_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def compute_features(data_dir: str | os.PathLike | DataDir, out_dir: str | os.PathLike,
                     feat_cfg: FeatureConfig | None = None, cmvn_cfg: CmvnConfig | None = None, *,
                     jobs: Jobs | int | None = None, skip_bad: bool = False) -> RaggedStore:
    """Features of every utterance of a data dir, CMVN applied, as one RaggedStore at `out_dir`.

    Pass 1 computes static features, one scratch store per shard of utterances, in parallel as
    `jobs` says (an int: that many local processes; default: up to 4); pass 2 accumulates CMVN
    stats and writes CMVN-applied features with deltas in sorted utterance order, so the bytes do
    not depend on the number of jobs. Memory stays flat for any corpus size. A bad utterance raises
    its AsrKdError (naming it) unless `skip_bad`, which logs and lists it in meta. The shard stores
    (`<out_dir>.shards/`) are removed once the store is written, and reused by a re-run before that.
    """
    cfg, cmvn = (feat_cfg or FeatureConfig()).resolved(), (cmvn_cfg or CmvnConfig()).check()
    data = data_dir if isinstance(data_dir, DataDir) else load_datadir(data_dir)
    jobs = jobs if isinstance(jobs, Jobs) else Jobs(nj=jobs or default_num_jobs())
    out_dir = Path(out_dir)
    shard_root = out_dir.with_name(out_dir.name + ".shards")
    try:
        raw, skipped, warnings = compute_raw(data, cfg, shard_root, jobs, skip_bad)
    finally:
        if shard_root.is_dir() and not any(shard_root.iterdir()):
            shard_root.rmdir()
    stats = speaker_stats(raw, data, cmvn)
    for w in warnings[:10]:
        log.warning("%s", w["warning"])
    if len(warnings) > 10:
        log.warning("%s: %d more utterances with a warning (listed in %s/meta.json)", data.path, len(warnings) - 10, out_dir)
    store = write_normalised(raw, out_dir, cfg, cmvn, stats, skipped, data, warnings)
    shutil.rmtree(shard_root, ignore_errors=True)
    return store


def compute_raw(data: DataDir, cfg: FeatureConfig, shard_root: Path, jobs: Jobs,
                skip_bad: bool) -> tuple[list[RaggedStore], list[dict], list[dict]]:
    """Pass 1: the shard stores of static features (in utterance order), the skipped and the warned lists."""
    shards = split(data.utt_ids, jobs.nj)
    skipped_per_shard = run_shards(features_shard, shards, jobs, str(data.path), cfg, str(shard_root), skip_bad,
                                   desc=f"{cfg.kind} {data.path}")
    stores = [RaggedStore(shard_path(shard_root, shard)) for shard in shards]
    entries = [s for shard in skipped_per_shard for s in shard]
    if not any(len(store) for store in stores):
        raise AsrKdError(f"{data.path}: no utterance gave features ({sum('warning' not in s for s in entries)} skipped)")
    return stores, [s for s in entries if "warning" not in s], [s for s in entries if "warning" in s]


def raw_items(raw: list[RaggedStore]):
    """(utt, static features) of every shard store, in order."""
    for store in raw:
        yield from store.items()


def cmvn_unit(utt: str, data: DataDir, cmvn: CmvnConfig) -> str:
    return data.utt2spk[utt] if cmvn.per == "speaker" else utt


def speaker_stats(raw: list[RaggedStore], data: DataDir, cmvn: CmvnConfig) -> dict[str, np.ndarray]:
    """Kaldi compute-cmvn-stats per speaker (or per utterance): unit -> (2, dim + 1) stats."""
    stats: dict[str, np.ndarray] = {}
    if not cmvn.active:
        return stats
    for utt, feats in raw_items(raw):
        unit = cmvn_unit(utt, data, cmvn)
        stats[unit] = stats[unit] + cmvn_stats(feats) if unit in stats else cmvn_stats(feats)
    return stats


def write_normalised(raw: list[RaggedStore], out_dir: Path, cfg: FeatureConfig, cmvn: CmvnConfig,
                     stats: dict[str, np.ndarray], skipped: list[dict], data: DataDir,
                     warnings: list[dict] = ()) -> RaggedStore:
    """Pass 2: CMVN, deltas, storage dtype; CMVN stats and sample counts saved beside the rows."""
    num_samples = np.concatenate([np.load(store.path / "num_samples.npy") for store in raw])
    with RaggedStoreWriter(out_dir, cfg.dtype) as writer:
        for utt, feats in raw_items(raw):
            if cmvn.active:
                feats = apply_cmvn(feats, stats[cmvn_unit(utt, data, cmvn)], cmvn)
            writer.add(utt, add_deltas(feats, cfg.deltas, cfg.delta_window))
        units = sorted(stats)
        np.savez(writer.tmp / "cmvn_stats.npz", units=np.asarray(units, dtype=str),
                 stats=np.stack([stats[u] for u in units]) if units else np.zeros((0, 2, cfg.static_dim() + 1)))
        np.save(writer.tmp / "num_samples.npy", num_samples.astype(np.int64))
        store = writer.close({**feature_meta(cfg, cmvn, writer, skipped, data), "warnings": list(warnings)})
    log.info("%s: %d utterances, %d frames, dim %d (%d skipped)", out_dir, len(store), store.meta["num_frames"],
             store.meta["dim"], len(skipped))
    return store


def feature_meta(cfg: FeatureConfig, cmvn: CmvnConfig, writer: RaggedStoreWriter, skipped: list[dict],
                 data: DataDir) -> dict:
    config = to_dict(cfg)
    return {
        "kind": "features", "config": config, "config_hash": sha256_json(config),
        "sample_rate": cfg.sample_rate, "frame_shift_ms": cfg.frame_shift_ms, "frame_length_ms": cfg.frame_length_ms,
        "cmvn": {**to_dict(cmvn), "applied": cmvn.active, "stats_file": "cmvn_stats.npz"},
        "num_frames": writer.offsets[-1], "dim": cfg.dim(), "num_utts": len(writer.keys),
        "storage_dtype": cfg.dtype, "skipped": skipped, "source": str(data.path),
        "num_samples_file": "num_samples.npy",
    }


# ---------------------------------------------------------------- read back

def load_features(path: str | os.PathLike, expected_hash: str | None = None) -> RaggedStore:
    """Open a feature store, refusing one that is not a feature store or was made with another config."""
    store = RaggedStore(path)
    missing = [k for k in ("config", "config_hash", "dim", "frame_shift_ms") if k not in store.meta]
    if missing:
        raise AsrKdError(f"{store.path}/meta.json: not a feature store (missing {missing})")
    if store.meta["row_shape"] != [store.meta["dim"]]:
        raise AsrKdError(f"{store.path}/meta.json: dim {store.meta['dim']} but rows of shape {store.meta['row_shape']}")
    if expected_hash is not None and store.meta["config_hash"] != expected_hash:
        raise AsrKdError(f"{store.path}/meta.json: feature config hash {store.meta['config_hash']} does not match "
                         f"the expected {expected_hash} (features made with another config; recompute them or "
                         f"use the matching model)")
    return store


def config_hash(cfg: FeatureConfig) -> str:
    """The hash a store computed with `cfg` records in its meta."""
    return sha256_json(to_dict(cfg.resolved()))

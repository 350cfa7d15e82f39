"""Cached teacher targets: computed once per utterance, keyed by utterance id, checked on load.

Directory layout (published by one rename when complete, see `write_cache`)::

    meta.json  {"format", "target": "probs"|"logits", "combination", "temperature" (null for logits),
                "teacher_sha256": [...sorted], "feature_config_hash", "feature_store", "num_pdfs",
                "top_k" (null = full), "input_specs", "num_utts", "num_frames", "bytes",
                "full_fp16_bytes", "kept_mass_mean", "kl_topk_full_mean"}
    values/    RaggedStore float16, (frames, num_pdfs) or (frames, top_k)
    indices/   RaggedStore int16 (int32 past 32767 pdfs), (frames, top_k): the pdf ids of `values` (top-k caches only)

An `arith` cache holds probabilities at one T; a `geo` cache holds the mean member logits, so it
serves any T. Top-k keeps the k largest entries: probabilities are renormalised over them, logits
are renormalised implicitly by the softmax over the support. `CachedTeacher` refuses a cache made
by another teacher, combination, temperature or feature config, or missing an utterance or
differing in its frame count; the messages name the cache's feature store and the transfer set.

Scale: the writer never holds more than one block of feature rows and their targets; the reader
memory-maps the cache and gathers each batch's rows (full fp16 targets of LibriSpeech-100 at 2,000
pdfs are ~144 GB, which no trainer should load). The pre-sized, filled-in-place layout (rather
than RaggedStoreWriter's append stream) is what lets blocks resume after a kill and run in other
processes or machines without a concatenation pass over the finished bytes.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from asr_kd.data.store import RaggedStore, write_store_index
from asr_kd.distill.losses import Targets
from asr_kd.distill.teachers import OnlineTeacher, TeacherSpec
from asr_kd.errors import AsrKdError
from asr_kd.io import make_temp_dir, read_json, replace_dir, write_json
from asr_kd.nnet.ensemble import combine_logits
from asr_kd.nnet.frames import FrameData, check_finite
from asr_kd.parallel import Jobs, run_shards, split
from asr_kd.steps.tree import TREE_KEY

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


DEFAULT_TOP_K = 20  # the fallback when full targets exceed the budget (AN4 figures: docs/ARTIFACTS.md)


def cache_bytes(num_frames: int, num_pdfs: int, top_k: int | None) -> int:
    """Bytes of a cache's rows: fp16 values, plus int16 (int32 past 32767 pdfs) ids for top-k."""
    if not top_k:
        return num_frames * num_pdfs * 2
    return num_frames * min(top_k, num_pdfs) * (2 + (2 if num_pdfs < 2**15 else 4))


def choose_top_k(num_frames: int, num_pdfs: int, top_k: int | None, budget_bytes: float) -> int | None:
    """The k to cache: `top_k` when given (0 = full), else full fp16 if it fits the budget, else DEFAULT_TOP_K."""
    if top_k is not None:
        if not 0 <= top_k <= num_pdfs:
            raise AsrKdError(f"--top-k {top_k}: must be in 0..{num_pdfs} (the teacher has {num_pdfs} pdfs; 0 = all)")
        return top_k or None
    full = cache_bytes(num_frames, num_pdfs, None)
    if full <= budget_bytes:
        return None
    log.info("full fp16 targets (%.2f GB) exceed the budget (%.2f GB): caching the top %d pdfs per frame",
             full / 1e9, budget_bytes / 1e9, DEFAULT_TOP_K)
    return DEFAULT_TOP_K


def check_disk_space(path: str | os.PathLike, need: int, hint: str = "") -> None:
    """Refuse before writing anything when the filesystem of `path` has less than `need` bytes free."""
    path = Path(path)
    where = next(p for p in [path, *path.parents] if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise AsrKdError(f"{path}: the cache needs {need / 1e9:.2f} GB more but {where} has {free / 1e9:.2f} GB free; "
                         f"free space, write elsewhere{hint}")


@dataclass
class CacheJob:
    """What a shard of blocks needs to compute and write its rows: paths and small values only
    (pickled for pool or Dask workers); `teacher`/`source` objects are used as they are in-process."""

    partial: str
    models: list[str]
    combination: str
    device: str
    source: str | FrameData | RaggedStore
    target: str
    temperature: float
    top_k: int | None
    batch_frames: int
    block_frames: int
    threads: int = 0  # torch threads of a worker process (0: leave torch's default)
    teacher: OnlineTeacher | None = None


def write_cache(path: str | os.PathLike, teacher: OnlineTeacher, source: FrameData | RaggedStore, *,
                temperature: float | None, feature_config_hash: str, top_k: int | None = None,
                batch_frames: int = 8192, block_frames: int = 1 << 18, jobs: Jobs = Jobs()) -> CacheReport:
    """Run `teacher` on every utterance of `source` and store its targets keyed by utterance id.

    `source` is a feature store (read block by block from its memory map: about `block_frames`
    frames of whole utterances at a time, never the whole set) or a FrameData. Each batch of
    `batch_frames` frames is one stacked forward of all members. Blocks fill their own rows of a
    pre-sized file in `.<name>.partial/` and each records its completion, so a killed run resumes
    where it stopped, and `jobs` (nj > 1 or Dask, store sources only) may run shards of blocks in
    other processes. The cache appears at `path` only when complete (one rename), and the bytes
    depend only on the inputs, `block_frames` and `batch_frames`, never on `jobs` or on a resume.

    For top-k, reports the mean kept probability mass m and mean KL(top-k || full) = mean -log m
    (KL(full || top-k) is infinite: the renormalised top-k distribution is zero off its support).
    """
    path, num_pdfs = Path(path), teacher.num_pdfs
    target = _check_request(path, teacher, source, temperature, jobs)
    top_k = min(top_k, num_pdfs) if top_k else None
    offsets, utt_ids, name = _index_of(source)
    num_frames = int(offsets[-1])
    meta = {"format": CACHE_FORMAT, "target": target, "combination": teacher.combination,
            "temperature": None if target == "logits" else float(temperature),
            "teacher_sha256": list(teacher.spec.sha256), "feature_config_hash": feature_config_hash,
            "feature_store": name, "num_pdfs": num_pdfs, "top_k": top_k, "input_specs": teacher.input_specs,
            TREE_KEY: teacher.ensemble.tree_sha256}
    blocks = block_bounds(offsets, block_frames)
    plan = {**meta, "num_frames": num_frames, "num_utts": len(utt_ids), "block_frames": block_frames,
            "batch_frames": batch_frames}
    partial = _partial_dir(path, plan)
    todo = [b for b in range(len(blocks)) if not (partial / "done" / f"{b}.json").is_file()]
    row_bytes = cache_bytes(1, num_pdfs, top_k)
    log.info("teacher cache %s: %d utts, %d frames, %s: %.3f GB (full fp16: %.3f GB); %d of %d blocks to compute",
             path, len(utt_ids), num_frames, f"top-{top_k}" if top_k else "full fp16", row_bytes * num_frames / 1e9,
             cache_bytes(num_frames, num_pdfs, None) / 1e9, len(todo), len(blocks))
    need = sum(int(offsets[blocks[b][1]] - offsets[blocks[b][0]]) for b in todo) * row_bytes
    check_disk_space(path, need, "" if top_k else ", or cache the top k pdfs only (--top-k)")
    _allocate(partial, plan, num_pdfs, top_k)
    in_process = jobs.nj <= 1 and jobs.dask_scheduler is None
    job = CacheJob(str(partial), [str(s) for s in teacher.ensemble.sources], teacher.combination, str(teacher.device),
                   source if in_process else str(source.path), target,
                   float(temperature) if target == "probs" else 1.0, top_k, batch_frames, block_frames,
                   threads=0 if in_process else max(1, (os.cpu_count() or 1) // jobs.nj),
                   teacher=teacher if in_process else None)
    run_shards(cache_blocks, split([(b, *blocks[b]) for b in todo], 1 if in_process else jobs.nj * 4),
               jobs, job, desc="cache teacher")
    report = _finish(partial, path, meta, offsets, utt_ids, len(blocks), num_pdfs, top_k)
    log.info("teacher cache %s: %d utts, %d frames, %.2f MB (full fp16: %.2f MB)%s", path, report.num_utts,
             report.num_frames, report.bytes / 1e6, report.full_fp16_bytes / 1e6,
             f"; top-{top_k}: mean kept mass {report.kept_mass_mean:.4f}, mean KL(top-k||full) "
             f"{report.kl_topk_full_mean:.4f} nats at T={job.temperature:g}" if report.kept_mass_mean is not None else "")
    return report


def _check_request(path: Path, teacher: OnlineTeacher, source, temperature: float | None, jobs: Jobs) -> str:
    """Refuse what cannot be cached, before anything is written; returns the target kind."""
    if teacher.spec is None:
        raise AsrKdError(f"{path}: cannot cache a teacher without weight checksums (load it with OnlineTeacher.load)")
    target = "logits" if teacher.combination == "geo" else "probs"
    if target == "probs" and temperature is None:
        raise AsrKdError(f"{path}: an 'arith' cache stores probabilities at one temperature; give --temperature")
    if isinstance(source, RaggedStore):
        check_finite(source)
    elif jobs.nj > 1 or jobs.dask_scheduler is not None:
        raise AsrKdError(f"{source.name}: parallel caching (--nj/--dask-scheduler) reads a feature store, "
                         "not a FrameData")
    if jobs.nj > 1 and jobs.dask_scheduler is None and teacher.device.type != "cpu":
        raise AsrKdError(f"{path}: --nj {jobs.nj} forks CPU worker processes; on {teacher.device} use one process")
    return target


def block_bounds(offsets: np.ndarray, block_frames: int) -> list[tuple[int, int]]:
    """(first, end) utterance numbers of consecutive blocks of about `block_frames` frames of whole
    utterances (an utterance longer than a block is a block alone)."""
    bounds, u0, n = [], 0, len(offsets) - 1
    while u0 < n:
        u1 = min(n, max(u0 + 1, int(np.searchsorted(offsets, offsets[u0] + block_frames, side="right")) - 1))
        bounds.append((u0, u1))
        u0 = u1
    return bounds


def _partial_dir(path: Path, plan: dict) -> Path:
    """The resumable work dir `.<name>.partial/` next to `path`; one made for another plan is discarded."""
    partial = path.parent / f".{path.name}.partial"
    plan_file = partial / "plan.json"
    if partial.exists() and (not plan_file.is_file() or _read_plan(plan_file) != plan):
        log.warning("%s: left by a run with other inputs or settings; starting afresh", partial)
        shutil.rmtree(partial)
    return partial


def _read_plan(plan_file: Path) -> dict | None:
    """The plan a work dir was made for; None when a kill left it unreadable (the dir is then redone)."""
    try:
        return read_json(plan_file)
    except AsrKdError:
        return None


def _allocate(partial: Path, plan: dict, num_pdfs: int, top_k: int | None) -> None:
    """Create the work dir (once) and pre-size values/ (and indices/) data.bin: each block writes its
    own rows in place."""
    if not partial.exists():
        tmp = make_temp_dir(partial)
        (tmp / "done").mkdir()
        write_json(tmp / "plan.json", plan)
        os.replace(tmp, partial)
    for sub, width, dtype in _row_layouts(num_pdfs, top_k):
        (partial / sub).mkdir(exist_ok=True)
        size = plan["num_frames"] * width * np.dtype(dtype).itemsize
        with open(partial / sub / "data.bin", "ab") as f:
            if f.tell() != size:
                f.truncate(size)


def _row_layouts(num_pdfs: int, top_k: int | None) -> list[tuple[str, int, str]]:
    if not top_k:
        return [("values", num_pdfs, "float16")]
    return [("values", top_k, "float16"), ("indices", top_k, "int16" if num_pdfs < 2**15 else "int32")]


def cache_blocks(blocks: list[tuple[int, int, int]], job: CacheJob) -> None:
    """Compute and write the rows of `blocks` ((block number, first, end utterance)); a worker's job."""
    if job.threads:
        torch.set_num_threads(job.threads)
    teacher = job.teacher or OnlineTeacher.load(job.models, job.combination, job.device)
    source = job.source if not isinstance(job.source, str) else RaggedStore(job.source)
    rows, offsets, utt_ids, name = _rows_of(source)
    partial, device = Path(job.partial), teacher.device
    layouts = _row_layouts(teacher.num_pdfs, job.top_k)
    files = [np.memmap(partial / sub / "data.bin", dtype=np.dtype(dt).newbyteorder("<"), mode="r+",
                       shape=(int(offsets[-1]), width)) for sub, width, dt in layouts]
    for b, u0, u1 in blocks:
        block = block_data(rows, offsets, utt_ids, name, u0, u1, device)
        out, kept, kl = _block_targets(teacher, block, job)
        a, e = int(offsets[u0]), int(offsets[u1])
        for f, t in zip(files, out):
            f[a:e] = t.cpu().numpy()
            f.flush()
        write_json(partial / "done" / f"{b}.json", {"kept_mass_sum": kept, "kl_sum": kl})


def _block_targets(teacher: OnlineTeacher, block: FrameData, job: CacheJob):
    """([values, (ids)], kept mass sum, KL sum) of one block: one stacked forward per batch of frames."""
    vals, ids = [], []
    kept = torch.zeros((), dtype=torch.float64, device=teacher.device)
    kl = torch.zeros((), dtype=torch.float64, device=teacher.device)
    for frames in torch.arange(block.num_frames, device=block.device).split(job.batch_frames):
        member = teacher.member_logits(block, frames)
        full = member.mean(0) if job.target == "logits" else combine_logits(member, job.temperature, "arith").exp()
        if job.top_k:
            full, top, mass = top_k_targets(full, job.top_k, job.target, job.temperature)
            kept += mass.sum()
            kl -= mass.clamp_min(1e-300).log().sum()
            ids.append(top)
        vals.append(full.to(torch.float16))
    out = [torch.cat(vals)] + ([torch.cat(ids)] if job.top_k else [])
    return out, kept.item(), kl.item()


def top_k_targets(full: torch.Tensor, k: int, target: str, temperature: float):
    """(values, pdf ids, kept probability mass at T) of the k largest entries per frame; probabilities
    are renormalised over the k, logits stay as they are (the softmax over the support renormalises)."""
    vals, ids = full.topk(k, dim=-1)
    probs = torch.softmax(full / temperature, -1) if target == "logits" else full
    mass = probs.gather(-1, ids).sum(-1).double()
    if target == "probs":
        vals = vals / vals.sum(-1, keepdim=True)
    return vals, ids, mass


def _index_of(source: FrameData | RaggedStore) -> tuple[np.ndarray, list[str], str]:
    """(int64 utterance offsets, utterance ids, name) of a feature store or a FrameData."""
    if isinstance(source, RaggedStore):
        return np.asarray(source.offsets, dtype=np.int64), source.keys, str(source.path)
    return np.asarray(torch.as_tensor(source.offsets).cpu(), dtype=np.int64), source.utt_ids, source.name


def _rows_of(source: FrameData | RaggedStore):
    """(rows, offsets, utterance ids, name): the memory-mapped store rows, or the FrameData's tensor."""
    return (source.data if isinstance(source, RaggedStore) else source.feats), *_index_of(source)


def block_data(rows, offsets: np.ndarray, utt_ids: list[str], name: str, u0: int, u1: int,
               device: torch.device) -> FrameData:
    """Utterances u0..u1-1 as a small FrameData on `device`: the only feature rows resident at a time."""
    a, b = int(offsets[u0]), int(offsets[u1])
    feats = torch.from_numpy(np.array(rows[a:b], dtype=np.float32)) if isinstance(rows, np.ndarray) \
        else rows[a:b].float()
    return FrameData(feats.to(device), torch.from_numpy(offsets[u0:u1 + 1] - a), utt_ids[u0:u1],
                     name=f"{name}[utts {u0}:{u1}]")


def _finish(partial: Path, path: Path, meta: dict, offsets: np.ndarray, utt_ids: list[str], num_blocks: int,
            num_pdfs: int, top_k: int | None) -> CacheReport:
    """Index the filled stores, sum the block statistics in block order, publish `path` by one rename."""
    missing = [b for b in range(num_blocks) if not (partial / "done" / f"{b}.json").is_file()]
    if missing:
        raise AsrKdError(f"{partial}: blocks {missing[:5]} were not written; re-run the command")
    stats = [read_json(partial / "done" / f"{b}.json") for b in range(num_blocks)]
    for sub, width, dtype in _row_layouts(num_pdfs, top_k):
        write_store_index(partial / sub, utt_ids, offsets, dtype, (width,), meta)
    num_frames = int(offsets[-1])
    report = CacheReport(len(utt_ids), num_frames, sum(f.stat().st_size for f in partial.rglob("*.bin")),
                         cache_bytes(num_frames, num_pdfs, None))
    if top_k and num_frames:
        report.kept_mass_mean = sum(s["kept_mass_sum"] for s in stats) / num_frames
        report.kl_topk_full_mean = sum(s["kl_sum"] for s in stats) / num_frames
    write_json(partial / "meta.json", {**meta, **report.as_dict()})
    shutil.rmtree(partial / "done")
    (partial / "plan.json").unlink()
    replace_dir(partial, path)
    return report


def feature_config_hash(feats_path: str | os.PathLike) -> str:
    """The feature store's config hash (what a cache and a transfer set must agree on)."""
    meta_file = Path(feats_path) / "meta.json"
    value = read_json(meta_file).get("config_hash") if meta_file.is_file() else None
    if not value:
        raise AsrKdError(f"{meta_file}: no feature config_hash (not a feature store?)")
    return value


class CachedTeacher:
    """Teacher targets read from a cache, memory-mapped: each batch gathers only its own rows.

    Nothing of the size of the set is loaded: `attach` keeps, per utterance of the transfer set,
    where its rows start in the cache (O(utterances) memory), and a batch's frames map to cache
    rows by `cache_start[utt] + frame - offsets[utt]`, with the GLOBAL frame and utterance ids a
    (resident or streamed) `FrameBatch` carries.
    """

    def __init__(self, path: str | os.PathLike, *, temperature: float | None = None, spec: TeacherSpec | None = None,
                 feature_config_hash: str | None = None, feature_store: str | None = None,
                 device: str | torch.device = "cpu"):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise AsrKdError(f"{self.path}: not a teacher cache (no meta.json); run `asr-kd cache-teacher` first")
        self.meta = read_json(meta_file)
        if self.meta.get("format") != CACHE_FORMAT:
            raise AsrKdError(f"{meta_file}: format {self.meta.get('format')!r}, expected {CACHE_FORMAT!r}")
        check_cache_meta(self.meta, meta_file, temperature=temperature, spec=spec, feature_config_hash=feature_config_hash,
                         feature_store=feature_store)
        self.device = torch.device(device)
        self.combination = self.meta["combination"]
        self.values = RaggedStore(self.path / "values")
        self.indices = RaggedStore(self.path / "indices") if self.meta["top_k"] else None
        self._cache_start: np.ndarray | None = None  # per utterance of the attached set: its first cache row
        self._set_offsets: np.ndarray | None = None  # the attached set's global utterance offsets

    @property
    def num_pdfs(self) -> int:
        return int(self.meta["num_pdfs"])

    def to(self, device: str | torch.device) -> "CachedTeacher":
        self.device = torch.device(device)  # where targets are expanded (top-k scatter); rows stay on disk
        return self

    def attach(self, data) -> "CachedTeacher":
        """Map the utterances of `data` (`.utt_ids`, global `.offsets`, `.name`) to cache rows; checks
        that every utterance is cached with the same number of frames."""
        utt_ids, offsets = data.utt_ids, np.asarray(torch.as_tensor(data.offsets).cpu(), dtype=np.int64)
        name = getattr(data, "name", "the transfer set")
        missing = [u for u in utt_ids if u not in self.values]
        if missing:
            raise AsrKdError(f"{self.path}: {len(missing)} utterance(s) of {name} are not in the cache, "
                             f"e.g. {missing[:3]}; re-run cache-teacher on this set")
        start = np.empty(len(utt_ids), dtype=np.int64)
        for i, utt in enumerate(utt_ids):
            j = self.values.index(utt)
            start[i] = self.values.offsets[j]
            n_set, n_cache = int(offsets[i + 1] - offsets[i]), int(self.values.offsets[j + 1] - start[i])
            if n_set != n_cache:
                raise AsrKdError(f"{self.path}: utterance {utt!r} has {n_cache} cached frames (made from "
                                 f"{self.meta.get('feature_store', 'unrecorded features')}) but {n_set} feature "
                                 f"frames in {name}; the cache was made from other features")
        self._cache_start, self._set_offsets = start, offsets
        return self

    def rows(self, batch) -> np.ndarray:
        """Cache rows of a batch's frames (global frame and utterance ids of the attached set)."""
        utt = batch.utt_index.cpu().long().numpy()
        return self._cache_start[utt] + batch.frame_index.cpu().long().numpy() - self._set_offsets[utt]

    def targets(self, batch, temperature: float) -> Targets:
        if self._cache_start is None:
            raise AsrKdError(f"{self.path}: CachedTeacher.attach(transfer_set) must be called before training")
        check_cache_meta(self.meta, self.path / "meta.json", temperature=temperature)
        rows = self.rows(batch)
        vals = torch.from_numpy(self.values.data[rows]).to(self.device).float()  # a per-batch gather from the memmap
        if self.indices is not None:
            fill = float("-inf") if self.meta["target"] == "logits" else 0.0
            dense = vals.new_full((len(rows), self.num_pdfs), fill)
            ids = torch.from_numpy(self.indices.data[rows]).to(self.device).long()
            vals = dense.scatter_(1, ids, vals)
        vals = vals.to(batch.y.device)
        if self.meta["target"] == "logits":
            return Targets(labels=batch.y, logits=vals)
        return Targets(labels=batch.y, probs=vals / vals.sum(-1, keepdim=True))  # renormalise after fp16


def check_cache_meta(meta: dict, where, *, temperature: float | None = None, spec: TeacherSpec | None = None,
                     feature_config_hash: str | None = None, feature_store: str | None = None) -> None:
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
        problems.append(f"features: cache made from feature config {meta['feature_config_hash']} "
                        f"({meta.get('feature_store', 'store unrecorded')}), transfer set has {feature_config_hash}"
                        + (f" ({feature_store})" if feature_store else ""))
    if problems:
        raise AsrKdError(f"{where}: teacher cache does not match: " + "; ".join(problems))

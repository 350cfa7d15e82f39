"""Sets larger than the resident budget, trained chunk by chunk from memory-mapped stores.

    train = open_frames("data/fbank/train", "exp/tri1_ali", device="cuda", budget="auto")
    # a FrameData when the set fits the budget (exactly today's behaviour), else a StreamedFrames

The budget (`TrainConfig.data.max_resident_frames`) is a number of frames, a size ("8GB",
"512MiB") or `auto`: half the free device memory on CUDA, a quarter of MemAvailable on the CPU
(the CPU is shared with the stores' page cache and the model), rounded down to a power of two
so that `auto` resolves the same on a resumed run. A frame costs 4 * dim bytes of float32
features plus 8 of label and 8 of frame id.

Over budget, a `StreamedFrames` keeps two chunks resident: the one training and the next one,
read by a background thread (pread, not the memmap: see `RaggedStore.read_rows`) and copied to
the device while the current chunk trains. A chunk is a random subset of whole utterances of at
most budget / 2 frames; which utterances go into which chunk depends only on (seed, epoch), the
order of frames inside a chunk only on (member seed, epoch, chunk), so kill -9 and a resume
replay an epoch exactly, and no per-member permutation of all frames is ever built. An utterance
longer than a chunk stops with a message naming the budget and the set.

The contract with code that reads batches (teachers, the teacher cache): `frame_index` and
`utt_index` are GLOBAL row / utterance ids of the set, as for a resident `FrameData`; `windows`,
`labels_of` and `utt_of` accept any frame of the currently resident chunk; `offsets`, `utt_ids`,
`dim`, `name` describe the whole set. Sequential passes (statistics, dev metrics, inference,
caching) iterate `sequential_ranges()`, which makes consecutive utterance ranges resident.

Entry points for benchmarks: `open_frames(feats, ali, device=, budget=)`, then
`train_frame_classifier` / `train_ensemble` / `distill` as for any set; `resolve_budget` turns a
budget spec into frames.
"""
from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from asr_kd.data.store import RaggedStore, expect_kind
from asr_kd.errors import AsrKdError
from asr_kd.steps.tree import TREE_KEY
from asr_kd.nnet.frames import STATS_BLOCK, FrameData, Moments, alignment_starts, check_finite, open_alignment

log = logging.getLogger(__name__)

AUTO_FRACTION = {"cuda": 0.5, "cpu": 0.25}  # of free device memory / MemAvailable


@dataclass
class DataConfig:
    max_resident_frames: int | str = "auto"  # frames, a size ("8GB", "512MiB") or auto (free memory)


# ---------------------------------------------------------------- budget --------------------
def frame_bytes(dim: int) -> int:
    """Device bytes per resident frame: float32 features, int64 label, int64 frame id."""
    return 4 * dim + 16


def resolve_budget(spec: int | str, device: str | torch.device, dim: int) -> int:
    """A budget spec -> a number of resident frames on `device`."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        frames = spec
    elif str(spec).strip().isdigit():
        frames = int(spec)
    elif str(spec).strip().lower() == "auto":
        free = free_bytes(torch.device(device))
        frames = 1 << max(0, int(free * AUTO_FRACTION[torch.device(device).type] / frame_bytes(dim)).bit_length() - 1)
    else:
        frames = _size_bytes(str(spec)) // frame_bytes(dim)
    if frames < 1:
        raise AsrKdError(f"data.max_resident_frames={spec!r} leaves no room for a single frame")
    return int(frames)


def _size_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B)\s*", text, re.IGNORECASE)
    if not m:
        raise AsrKdError(f"data.max_resident_frames={text!r}: expected a frame count, a size like '8GB' or 'auto'")
    unit = m.group(2).upper()
    power = "KMGT".index(unit[0]) + 1
    return int(float(m.group(1)) * ((1024 if "I" in unit else 1000) ** power))


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 4 << 30  # no /proc (not Linux): assume 4 GB free


def open_frames(feats_path: str | Path, ali_path: str | Path | None = None, *, device: str | torch.device = "cpu",
                budget: int | str = "auto") -> "FrameData | StreamedFrames":
    """The set, fully resident (`FrameData`) if it fits `budget` frames, else streamed."""
    store = expect_kind(RaggedStore(feats_path), "features", "features")
    dim = int(np.prod(store.meta["row_shape"]))
    frames = resolve_budget(budget, device, dim)
    if store.data.shape[0] <= frames:
        return FrameData.load(feats_path, ali_path, device=device)
    log.info("%s: %d frames exceed the resident budget of %d (data.max_resident_frames=%s): streaming in chunks "
             "of <= %d frames", feats_path, store.data.shape[0], frames, budget, frames // 2)
    return StreamedFrames.open(feats_path, ali_path, device=device, budget=frames)


# ---------------------------------------------------------------- streamed set --------------
@dataclass
class Chunk:
    """Resident rows of some utterances: `feats`/`labels` rows in chunk order, `local_start[u]` the
    chunk row of utterance u's first frame (-1: not in this chunk), `frames` their global ids."""

    utts: np.ndarray
    feats: torch.Tensor
    labels: torch.Tensor
    local_start: torch.Tensor
    frames: torch.Tensor


class StreamedFrames:
    """A set read from its stores chunk by chunk; see the module docstring for the contract."""

    streamed = True

    def __init__(self, feats: RaggedStore, store_start: np.ndarray, lengths: np.ndarray, utt_ids: list[str],
                 ali: RaggedStore | None, ali_start: np.ndarray, num_pdfs: int | None, priors: np.ndarray | None,
                 *, device: torch.device, budget: int, name: str):
        self.store, self.ali = feats, ali
        self.store_start, self.ali_start = store_start, ali_start  # per set utterance; ali -1 = unlabelled
        self.lengths = lengths.astype(np.int64)
        self.utt_ids, self.num_pdfs, self.priors, self.name = list(utt_ids), num_pdfs, priors, name
        self.budget, self.chunk_frames = int(budget), int(budget) // 2
        self.tree_sha256 = ali.meta.get(TREE_KEY) if ali is not None else None  # recorded in the model
        self.device = torch.device(device)
        self.offsets_np = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.offsets = torch.from_numpy(self.offsets_np).to(self.device)
        self.current: Chunk | None = None
        longest = int(np.argmax(self.lengths)) if len(self.lengths) else 0
        if len(self.lengths) and self.lengths[longest] > self.chunk_frames:
            raise AsrKdError(f"{name}: utterance {self.utt_ids[longest]!r} has {self.lengths[longest]} frames, more than "
                             f"a chunk (half the resident budget of {self.budget} frames); raise "
                             f"data.max_resident_frames")

    @classmethod
    def open(cls, feats_path: str | Path, ali_path: str | Path | None = None, *, device: str | torch.device = "cpu",
             budget: int) -> "StreamedFrames":
        feats = RaggedStore(feats_path)
        check_finite(feats)
        ali, num_pdfs, priors = open_alignment(ali_path)
        ali_start = alignment_starts(feats, ali, num_pdfs) if ali is not None else \
            np.full(len(feats.keys), -1, dtype=np.int64)
        return cls(feats, feats.offsets[:-1].astype(np.int64), feats.lengths(), feats.keys, ali, ali_start, num_pdfs,
                   priors, device=torch.device(device), budget=budget, name=str(feats_path))

    def _replace(self, utts: np.ndarray, *, labelled: bool = True, name: str, device=None) -> "StreamedFrames":
        ali_start = self.ali_start[utts] if labelled else np.full(len(utts), -1, dtype=np.int64)
        return StreamedFrames(self.store, self.store_start[utts], self.lengths[utts], [self.utt_ids[u] for u in utts],
                              self.ali, ali_start, self.num_pdfs, self.priors, device=device or self.device,
                              budget=self.budget, name=name)

    def select(self, utts: np.ndarray, name: str) -> "StreamedFrames":
        """The set of utterances `utts` (set indices, in that order), renumbered like a resident subset."""
        return self._replace(np.asarray(utts, dtype=np.int64), name=name)

    def without_labels(self, name: str) -> "StreamedFrames":
        return self._replace(np.arange(len(self.utt_ids)), labelled=False, name=name)

    def to(self, device: str | torch.device) -> "StreamedFrames":
        if torch.device(device) == self.device:
            return self
        return self._replace(np.arange(len(self.utt_ids)), name=self.name, device=torch.device(device))

    # ---- sizes --------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.offsets_np[-1])

    @property
    def dim(self) -> int:
        return int(np.prod(self.store.meta["row_shape"]))

    def num_labelled_frames(self) -> int:
        return int(self.lengths[self.ali_start >= 0].sum())

    def layout(self) -> dict:
        return {"chunk_frames": self.chunk_frames}

    # ---- frames of the resident chunk ---------------------------------------------------
    def _chunk(self) -> Chunk:
        if self.current is None:
            raise AsrKdError(f"{self.name}: no chunk is resident (iterate epoch_chunks/sequential_ranges first)")
        return self.current

    def utt_of(self, frame_index: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.offsets, frame_index, right=True) - 1

    def _local(self, frame_index: torch.Tensor, utt: torch.Tensor) -> torch.Tensor:
        return frame_index - self.offsets[utt] + self._chunk().local_start[utt]

    def labels_of(self, frame_index: torch.Tensor, utt: torch.Tensor | None = None) -> torch.Tensor:
        utt = self.utt_of(frame_index) if utt is None else utt
        return self._chunk().labels[self._local(frame_index, utt)]

    def windows(self, frame_index: torch.Tensor, left: int, right: int, utt: torch.Tensor | None = None) -> torch.Tensor:
        """As FrameData.windows, for frames of the resident chunk (global ids); `utt` = utt_of(frame_index)
        when the caller has it already (a binary search per frame saved)."""
        chunk = self._chunk()
        utt = self.utt_of(frame_index) if utt is None else utt
        first, last = self.offsets[utt], self.offsets[utt + 1] - 1
        rel = torch.arange(-left, right + 1, device=self.device)
        rows = torch.clamp(frame_index[:, None] + rel[None, :], first[:, None], last[:, None])
        rows = rows - first[:, None] + chunk.local_start[utt][:, None]
        return chunk.feats[rows].reshape(len(frame_index), -1)

    # ---- chunk plans --------------------------------------------------------------------
    def epoch_plan(self, seed: int, epoch: int, labelled_only: bool) -> list[np.ndarray]:
        """Utterances of each chunk of `epoch`: a (seed, epoch)-random order packed into chunks."""
        utts = np.nonzero(self.ali_start >= 0)[0] if labelled_only else np.arange(len(self.utt_ids))
        order = utts[np.random.default_rng([seed, epoch]).permutation(len(utts))]
        return pack(order, self.lengths, self.chunk_frames)

    def chunk_frame_counts(self, plan: list[np.ndarray]) -> list[int]:
        return [int(self.lengths[c].sum()) for c in plan]

    def resident(self, plan: list[np.ndarray]) -> Iterator[Chunk]:
        """Make each chunk of `plan` resident in turn, loading the next in a background thread."""
        if not plan:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="chunk-loader") as pool:
            pending = pool.submit(self._load, plan[0])
            try:
                for i in range(len(plan)):
                    chunk = pending.result()
                    pending = pool.submit(self._load, plan[i + 1]) if i + 1 < len(plan) else None
                    self.current = chunk
                    yield chunk
                    self.current = None
            finally:
                self.current = None
                if pending is not None:
                    pending.cancel()

    def sequential_ranges(self) -> Iterator[tuple[int, int]]:
        """Consecutive utterance ranges [u0, u1), each resident while the caller works on it."""
        plan = pack(np.arange(len(self.utt_ids)), self.lengths, self.chunk_frames)
        for chunk in self.resident(plan):
            yield int(chunk.utts[0]), int(chunk.utts[-1]) + 1

    def feature_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        moments = Moments()
        for _ in self.sequential_ranges():
            feats = self._chunk().feats
            for start in range(0, len(feats), STATS_BLOCK):
                moments.add(feats[start:start + STATS_BLOCK])
        return moments.mean_std()

    def _load(self, utts: np.ndarray) -> Chunk:
        """Read the chunk's rows from the stores (pread) and copy them to the device."""
        lengths = self.lengths[utts]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        total = int(lengths.sum())
        feats = np.empty((total, self.dim), dtype=np.dtype(self.store.meta["dtype"]))
        labels = np.full(total, -1, dtype=np.int64)
        for u, start, n in zip(utts, starts, lengths):
            self.store.read_rows(self.store_start[u], self.store_start[u] + n, feats[start:start + n])
            if self.ali_start[u] >= 0:
                labels[start:start + n] = self.ali.read_rows(self.ali_start[u], self.ali_start[u] + n)
        local_start = np.full(len(self.utt_ids), -1, dtype=np.int64)
        local_start[utts] = starts
        frames = np.repeat(self.offsets_np[utts] - starts, lengths) + np.arange(total)
        return Chunk(utts, *_to_device([torch.from_numpy(feats), torch.from_numpy(labels),
                                        torch.from_numpy(local_start), torch.from_numpy(frames)], self.device))


def _to_device(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Float features become float32 on `device`; on CUDA the copy runs on a side stream, finished
    before returning, so it overlaps the training kernels of the previous chunk."""
    if device.type != "cuda":
        return [t.float() if t.is_floating_point() else t for t in tensors]
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        out = [t.pin_memory().to(device, non_blocking=True) for t in tensors]
        out = [t.float() if t.is_floating_point() else t for t in out]
    stream.synchronize()
    return out


def labelled_ranges(data: FrameData | StreamedFrames):
    """Global ids of the labelled frames of each resident range of `data`, in set order."""
    if not data.streamed:
        yield data.labelled_frames()
        return
    for u0, u1 in data.sequential_ranges():
        frames = torch.arange(int(data.offsets_np[u0]), int(data.offsets_np[u1]), device=data.device)
        yield frames[data.labels_of(frames) >= 0]


def pack(order: np.ndarray, lengths: np.ndarray, chunk_frames: int) -> list[np.ndarray]:
    """Consecutive runs of `order` with at most `chunk_frames` frames each (every utterance fits one)."""
    if len(order) == 0:
        return []
    ends = np.cumsum(lengths[order])
    chunks, start, base = [], 0, 0
    while start < len(order):
        stop = int(np.searchsorted(ends, base + chunk_frames, side="right"))
        stop = max(stop, start + 1)
        chunks.append(order[start:stop])
        base, start = int(ends[stop - 1]), stop
    return chunks


def chunk_seed(seed: int, epoch: int, chunk: int) -> int:
    """Seed of a member's in-chunk frame order: a function of (member seed, epoch, chunk) only."""
    return int(np.random.SeedSequence([seed, epoch, chunk]).generate_state(1, np.uint64)[0] >> 1)

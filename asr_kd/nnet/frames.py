"""A data set as device tensors, and context windows built on the device by index arithmetic.

A frame classifier sees one frame's label and a window of `left + 1 + right` feature frames
around it. Rather than splicing windows on disk (Kaldi's `splice-feats`, 26x the storage) or in
DataLoader workers (per-frame Python), `FrameData` keeps the whole set as ONE (frames, dim)
tensor plus utterance offsets on the training device, and a batch of windows is one gather:

    rows = clamp(frame_index[:, None] + arange(-left, right + 1), utt_start, utt_end - 1)
    x    = feats[rows].reshape(batch, window * dim)

Clamping to the utterance's own first/last frame repeats edge frames, exactly as Kaldi's
splicing pads, so utterances shorter than the window are fine and windows never cross utterances.

Context defaults: 5 + 1 + 5 = 11 frames (cheap on CPU, the classic Kaldi nnet1 window); the
paper's 26-frame window is `left_context=10, right_context=15` (TrainConfig).

Labels come from an alignment store (int32 pdf id per frame) checked utterance by utterance
against the features; a set without labels (transfer data for distillation) has all labels -1.

A set larger than the resident budget is a `StreamedFrames` (stream.py) with the same interface;
code that serves both uses `labels_of`/`utt_of`/`sequential_ranges`/`feature_stats`, never the
whole-set tensors `.feats`/`.labels`/`.utt_of_frame`, which only a resident set has.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr_kd.data.store import RaggedStore, check_finite, expect_kind, load_array
from asr_kd.errors import AsrKdError
from asr_kd.steps.tree import TREE_KEY

log = logging.getLogger(__name__)


@dataclass
class FrameBatch:
    """One minibatch: windows `.x` (B, window*dim), labels `.y` (B,) with -1 = unlabelled,
    `.frame_index` (B,) global row ids into the set's feature tensor, `.utt_index` (B,)."""

    x: torch.Tensor
    y: torch.Tensor
    frame_index: torch.Tensor
    utt_index: torch.Tensor


class FrameData:
    """Features (frames, dim), labels (frames,) and utterance offsets of one set, on one device."""

    def __init__(self, feats: torch.Tensor, offsets: torch.Tensor, utt_ids: list[str],
                 labels: torch.Tensor | None = None, num_pdfs: int | None = None,
                 priors: np.ndarray | None = None, name: str = "data"):
        self.feats = feats
        self.offsets = offsets.to(device=feats.device, dtype=torch.long)
        self.utt_ids = list(utt_ids)
        self.name = name
        n = feats.shape[0]
        self.labels = labels.to(feats.device, torch.long) if labels is not None else \
            torch.full((n,), -1, dtype=torch.long, device=feats.device)
        self.num_pdfs = num_pdfs
        self.priors = priors
        self.tree_sha256: str | None = None  # the alignment's tree (set by `load`), recorded in the model
        lengths = self.offsets[1:] - self.offsets[:-1]
        self.utt_of_frame = torch.repeat_interleave(torch.arange(len(self.utt_ids), device=feats.device), lengths)
        self._labelled: torch.Tensor | None = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, feats_path: str | Path, ali_path: str | Path | None = None, *,
             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "FrameData":
        """Read a feature store (and optionally its alignment store) onto `device`, all of it.

        Utterances missing from the alignment stay unlabelled (-1) with a warning: a GMM
        alignment can fail for a few utterances, which should not stop training. To respect a
        memory budget, use `stream.open_frames`, which calls this for sets that fit.
        """
        feats = expect_kind(RaggedStore(feats_path), "features", "features")
        check_finite(feats)
        ali, num_pdfs, priors = open_alignment(ali_path)
        labels = labels_for(feats, ali, num_pdfs) if ali is not None else None
        data = torch.from_numpy(np.array(feats.data, dtype=np.float32)).to(device=device, dtype=dtype)
        offsets = torch.from_numpy(feats.offsets.astype(np.int64))
        label_tensor = torch.from_numpy(labels) if labels is not None else None
        frames = cls(data, offsets, feats.keys, label_tensor, num_pdfs, priors, name=str(feats_path))
        frames.tree_sha256 = ali.meta.get(TREE_KEY) if ali is not None else None
        return frames

    def to(self, device: str | torch.device) -> "FrameData":
        if torch.device(device) == self.feats.device:
            return self
        moved = FrameData(self.feats.to(device), self.offsets, self.utt_ids, self.labels,
                          self.num_pdfs, self.priors, self.name)
        moved.tree_sha256 = self.tree_sha256
        return moved

    # ---- sizes --------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.feats.shape[0])

    @property
    def dim(self) -> int:
        return int(self.feats.shape[1])

    @property
    def device(self) -> torch.device:
        return self.feats.device

    streamed = False

    def labels_of(self, frame_index: torch.Tensor, utt: torch.Tensor | None = None) -> torch.Tensor:
        return self.labels[frame_index]

    def utt_of(self, frame_index: torch.Tensor) -> torch.Tensor:
        return self.utt_of_frame[frame_index]

    def num_labelled_frames(self) -> int:
        return int((self.labels >= 0).sum())

    def sequential_ranges(self):
        """Utterance ranges [u0, u1) whose frames are resident while iterating: here, the whole set."""
        yield 0, len(self.utt_ids)

    def layout(self) -> str:
        """How frames reach the device (recorded in checkpoints: it decides the frame order)."""
        return "resident"

    def labelled_frames(self) -> torch.Tensor:
        """Global ids of frames with a label (all frames of a fully aligned set)."""
        if self._labelled is None:
            self._labelled = torch.nonzero(self.labels >= 0).squeeze(1)
        return self._labelled

    def feature_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and standard deviation over all frames (for the model's InputNorm)."""
        moments = Moments()
        for start in range(0, self.num_frames, STATS_BLOCK):
            moments.add(self.feats[start:start + STATS_BLOCK])
        return moments.mean_std()

    def utt_frames(self, u: int) -> torch.Tensor:
        """Global frame ids of utterance number `u`."""
        return torch.arange(int(self.offsets[u]), int(self.offsets[u + 1]), device=self.device)

    # ---- windows ------------------------------------------------------------------------
    def windows(self, frame_index: torch.Tensor, left: int, right: int, utt: torch.Tensor | None = None) -> torch.Tensor:
        """(B, (left+1+right)*dim) context windows around `frame_index`, edge frames repeated
        (`utt`: the frames' utterance numbers, if the caller has them)."""
        utt = self.utt_of_frame[frame_index] if utt is None else utt
        first, last = self.offsets[utt], self.offsets[utt + 1] - 1
        rel = torch.arange(-left, right + 1, device=self.device)
        rows = torch.clamp(frame_index[:, None] + rel[None, :], first[:, None], last[:, None])
        return self.feats[rows].reshape(len(frame_index), -1)

    def batch(self, frame_index: torch.Tensor, left: int, right: int) -> FrameBatch:
        return FrameBatch(self.windows(frame_index, left, right), self.labels[frame_index],
                          frame_index, self.utt_of_frame[frame_index])


STATS_BLOCK = 1 << 18  # rows per float64 block in feature statistics (~80 MB at 40 dims)


class Moments:
    """Per-dimension mean and variance accumulated block by block (Chan et al.'s pairwise merge).

    Bounded memory: one float64 block at a time instead of a float64 copy of the whole set, and
    numerically as stable as the two-pass formula (no E[x^2] - E[x]^2 cancellation).
    """

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, block: torch.Tensor) -> None:
        if len(block) == 0:
            return
        block = block.double()
        n_b, mean_b = len(block), block.mean(0)
        m2_b = ((block - mean_b) ** 2).sum(0)
        if self.mean is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta ** 2 * (self.n * n_b / n)
        self.n = n

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and unbiased standard deviation (as torch.std), float32."""
        if self.mean is None:
            raise AsrKdError("feature statistics of an empty set")
        std = (self.m2 / max(self.n - 1, 1)).sqrt()
        return self.mean.float(), std.float()


def shuffled(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`frames` in a random order drawn from `generator` (frame-level shuffling across utterances)."""
    perm = torch.randperm(len(frames), generator=generator, device=generator.device)
    return frames[perm.to(frames.device)]


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A seeded generator on `device` (randperm on CUDA needs a CUDA generator)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def open_alignment(ali_path: str | Path | None) -> tuple[RaggedStore | None, int | None, np.ndarray | None]:
    """(store, num_pdfs, priors) of an alignment dir; all None without one."""
    if ali_path is None:
        return None, None, None
    ali = expect_kind(RaggedStore(ali_path), "alignment", "alignment")
    prior_file = Path(ali_path) / "priors.npy"
    return ali, int(ali.meta.get("num_pdfs", 0)) or None, load_array(prior_file) if prior_file.is_file() else None


def labels_for(feats: RaggedStore, ali: RaggedStore, num_pdfs: int | None) -> np.ndarray:
    """Per-frame pdf ids aligned with the feature rows; -1 where an utterance has no alignment."""
    starts = alignment_starts(feats, ali, num_pdfs)
    labels = np.full(feats.data.shape[0], -1, dtype=np.int64)
    for u in np.nonzero(starts >= 0)[0]:
        first, last = int(feats.offsets[u]), int(feats.offsets[u + 1])
        labels[first:last] = ali.data[starts[u]:starts[u] + last - first]
    return labels


def alignment_starts(feats: RaggedStore, ali: RaggedStore, num_pdfs: int | None) -> np.ndarray:
    """For each feature utterance, the first row of its labels in `ali` (-1: not aligned), checked.

    Checks lengths utterance by utterance and pdf ids block by block, reading no more than one
    block of labels at a time (a streamed set never holds all of them).
    """
    starts = np.full(len(feats.keys), -1, dtype=np.int64)
    missing = []
    for u, utt in enumerate(feats.keys):
        if utt not in ali:
            missing.append(utt)
            continue
        a = ali.index(utt)
        n_ali, n_feat = int(ali.offsets[a + 1] - ali.offsets[a]), int(feats.offsets[u + 1] - feats.offsets[u])
        if ali.data.ndim != 1 or n_ali != n_feat:
            raise AsrKdError(f"{ali.path}: utterance {utt!r} has {n_ali} labels but {n_feat} feature "
                             f"frames in {feats.path}; were both made with the same frame shift/config?")
        starts[u] = ali.offsets[a]
    if missing:
        log.warning("%s: %d of %d utterances have no alignment (left unlabelled), e.g. %s",
                    ali.path, len(missing), len(feats.keys), missing[0])
    if num_pdfs is None and (starts >= 0).any():
        raise AsrKdError(f"{ali.path}/meta.json: no num_pdfs")
    _check_pdf_range(ali, num_pdfs)
    return starts


def _check_pdf_range(ali: RaggedStore, num_pdfs: int | None) -> None:
    block = 1 << 22
    total = ali.data.shape[0]
    for start in range(0, total, block):
        pdfs = ali.read_rows(start, min(start + block, total))
        bad = np.nonzero((pdfs < 0) | (pdfs >= (num_pdfs if num_pdfs is not None else np.iinfo(np.int64).max)))[0]
        if len(bad):
            a = int(np.searchsorted(ali.offsets, start + int(bad[0]), side="right")) - 1
            raise AsrKdError(f"{ali.path}: utterance {ali.keys[a]!r} has pdf ids outside [0, {num_pdfs})")

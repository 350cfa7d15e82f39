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
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError

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
        lengths = self.offsets[1:] - self.offsets[:-1]
        self.utt_of_frame = torch.repeat_interleave(torch.arange(len(self.utt_ids), device=feats.device), lengths)
        self._labelled: torch.Tensor | None = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, feats_path: str | Path, ali_path: str | Path | None = None, *,
             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "FrameData":
        """Read a feature store (and optionally its alignment store) onto `device`.

        Utterances missing from the alignment stay unlabelled (-1) with a warning: a GMM
        alignment can fail for a few utterances, which should not stop training.
        """
        feats = RaggedStore(feats_path)
        check_finite(feats)
        labels, num_pdfs, priors = None, None, None
        if ali_path is not None:
            ali = RaggedStore(ali_path)
            num_pdfs = int(ali.meta.get("num_pdfs", 0)) or None
            labels = labels_for(feats, ali, num_pdfs)
            prior_file = Path(ali_path) / "priors.npy"
            priors = np.load(prior_file) if prior_file.is_file() else None
        data = torch.from_numpy(np.array(feats.data, dtype=np.float32)).to(device=device, dtype=dtype)
        offsets = torch.from_numpy(feats.offsets.astype(np.int64))
        label_tensor = torch.from_numpy(labels) if labels is not None else None
        return cls(data, offsets, feats.keys, label_tensor, num_pdfs, priors, name=str(feats_path))

    def to(self, device: str | torch.device) -> "FrameData":
        if torch.device(device) == self.feats.device:
            return self
        return FrameData(self.feats.to(device), self.offsets, self.utt_ids, self.labels,
                         self.num_pdfs, self.priors, self.name)

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

    def labelled_frames(self) -> torch.Tensor:
        """Global ids of frames with a label (all frames of a fully aligned set)."""
        if self._labelled is None:
            self._labelled = torch.nonzero(self.labels >= 0).squeeze(1)
        return self._labelled

    def feature_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and standard deviation over all frames (for the model's InputNorm)."""
        feats = self.feats.double()
        return feats.mean(0).float(), feats.std(0).float()

    def utt_frames(self, u: int) -> torch.Tensor:
        """Global frame ids of utterance number `u`."""
        return torch.arange(int(self.offsets[u]), int(self.offsets[u + 1]), device=self.device)

    # ---- windows ------------------------------------------------------------------------
    def windows(self, frame_index: torch.Tensor, left: int, right: int) -> torch.Tensor:
        """(B, (left+1+right)*dim) context windows around `frame_index`, edge frames repeated."""
        utt = self.utt_of_frame[frame_index]
        first, last = self.offsets[utt], self.offsets[utt + 1] - 1
        rel = torch.arange(-left, right + 1, device=self.device)
        rows = torch.clamp(frame_index[:, None] + rel[None, :], first[:, None], last[:, None])
        return self.feats[rows].reshape(len(frame_index), -1)

    def batch(self, frame_index: torch.Tensor, left: int, right: int) -> FrameBatch:
        return FrameBatch(self.windows(frame_index, left, right), self.labels[frame_index],
                          frame_index, self.utt_of_frame[frame_index])


def shuffled(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`frames` in a random order drawn from `generator` (frame-level shuffling across utterances)."""
    perm = torch.randperm(len(frames), generator=generator, device=generator.device)
    return frames[perm.to(frames.device)]


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A seeded generator on `device` (randperm on CUDA needs a CUDA generator)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def check_finite(feats: RaggedStore) -> None:
    """Refuse NaN/inf features, naming the first bad utterance (they would poison training silently)."""
    chunk = 1 << 20
    for start in range(0, feats.data.shape[0], chunk):
        block = np.asarray(feats.data[start:start + chunk], dtype=np.float32)
        bad_rows = np.nonzero(~np.isfinite(block).all(axis=1))[0]
        if len(bad_rows):
            row = start + int(bad_rows[0])
            u = int(np.searchsorted(feats.offsets, row, side="right")) - 1
            raise AsrKdError(f"{feats.path}: utterance {feats.keys[u]!r} has NaN/inf features "
                             f"(frame {row - int(feats.offsets[u])})")


def labels_for(feats: RaggedStore, ali: RaggedStore, num_pdfs: int | None) -> np.ndarray:
    """Per-frame pdf ids aligned with the feature rows; -1 where an utterance has no alignment."""
    labels = np.full(feats.data.shape[0], -1, dtype=np.int64)
    missing = []
    for u, utt in enumerate(feats.keys):
        if utt not in ali:
            missing.append(utt)
            continue
        pdfs = np.asarray(ali[utt])
        n_feat = int(feats.offsets[u + 1] - feats.offsets[u])
        if pdfs.ndim != 1 or len(pdfs) != n_feat:
            raise AsrKdError(f"{ali.path}: utterance {utt!r} has {len(pdfs)} labels but {n_feat} feature "
                             f"frames in {feats.path}; were both made with the same frame shift/config?")
        if len(pdfs) and (pdfs.min() < 0 or (num_pdfs is not None and pdfs.max() >= num_pdfs)):
            raise AsrKdError(f"{ali.path}: utterance {utt!r} has pdf ids outside [0, {num_pdfs})")
        labels[feats.offsets[u]:feats.offsets[u + 1]] = pdfs
    if missing:
        log.warning("%s: %d of %d utterances have no alignment (left unlabelled), e.g. %s",
                    ali.path, len(missing), len(feats.keys), missing[0])
    if num_pdfs is None and (labels >= 0).any():
        raise AsrKdError(f"{ali.path}/meta.json: no num_pdfs")
    return labels

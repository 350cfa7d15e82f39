"""Apply trained models: per-utterance log-likelihoods for the decoder, frame metrics vs alignments.

The hybrid decoder needs scaled likelihoods p(x|s) ~ p(s|x) / p(s): log posterior minus log prior,
with priors from the training alignment (`priors.npy`, pdf frequencies). Pdfs with a prior below
`prior_floor` (never or almost never seen in training) get a very large log prior, so they are
effectively barred, as in Kaldi nnet1's PdfPrior.

Everything here takes a "scorer": an `Ensemble`, a `(model, spec)` pair from `load_model`, or a
model dir / list of dirs. One model is a one-member ensemble.

Bounded memory at any set size: a set larger than the resident budget is streamed
(`stream.open_frames`) and visited range by range; outputs go to the store batch by batch (one
device-to-host copy per batch of about `batch_size` frames, never one per utterance), and frame
metrics stay on the device until the end.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asr_kd.data.store import RaggedStore, RaggedStoreWriter, load_array
from asr_kd.errors import AsrKdError
from asr_kd.io import sha256_file
from asr_kd.nnet.ensemble import Ensemble
from asr_kd.nnet.frames import FrameData
from asr_kd.nnet.stream import StreamedFrames, labelled_ranges, open_frames
from asr_kd.steps.tree import TREE_KEY, check_same_tree, tree_of_dir

log = logging.getLogger(__name__)

BARRED_LOG_PRIOR = 1e4  # log prior given to floored pdfs: log-likelihood ~ -1e4 (finite, fits fp16)


def as_ensemble(scorer, device: str | torch.device = "cpu") -> Ensemble:
    if isinstance(scorer, Ensemble):
        return scorer
    if isinstance(scorer, tuple) and len(scorer) == 2 and isinstance(scorer[0], torch.nn.Module):
        return Ensemble([scorer])
    if isinstance(scorer, (str, Path, list)):
        return Ensemble.load(scorer, device)
    raise AsrKdError(f"cannot score with {type(scorer).__name__}: expected an Ensemble, (model, spec) or model dirs")


def as_data(feats, ali=None, device="cpu", budget: int | str = "auto") -> FrameData | StreamedFrames:
    if isinstance(feats, (FrameData, StreamedFrames)):
        return feats
    return open_frames(feats, ali, device=device, budget=budget)


def read_priors(path: str | Path) -> np.ndarray:
    """priors.npy from an alignment dir (or the file itself)."""
    path = Path(path)
    file = path / "priors.npy" if path.is_dir() else path
    if not file.is_file():
        raise AsrKdError(f"{file}: no priors (expected an alignment dir with priors.npy)")
    return load_array(file)


def log_priors(priors: np.ndarray, num_pdfs: int, prior_floor: float = 1e-10) -> torch.Tensor:
    priors = np.asarray(priors, dtype=np.float64)
    if priors.shape != (num_pdfs,):
        raise AsrKdError(f"priors have {priors.shape} entries but the model has {num_pdfs} pdfs")
    logp = np.where(priors >= prior_floor, np.log(np.maximum(priors, prior_floor)), BARRED_LOG_PRIOR)
    return torch.from_numpy(logp.astype(np.float32))


def utterance_chunks(offsets: list[int], u0: int, u1: int, batch_size: int, device):
    """Runs of whole utterances of [u0, u1) of about `batch_size` frames: (first utt, end utt, frame ids)."""
    u = u0
    while u < u1:
        end = u + 1
        while end < u1 and offsets[end + 1] - offsets[u] <= batch_size:
            end += 1
        yield u, end, torch.arange(offsets[u], offsets[end], device=device)
        u = end


def compute_loglikes(scorer, feats, out: str | Path, *, priors: np.ndarray | None = None,
                     temperature: float = 1.0, combine: str = "arith", dtype: str = "float32",
                     batch_size: int = 8192, prior_floor: float = 1e-10, device="cpu",
                     budget: int | str = "auto", priors_source: str | Path | None = None) -> RaggedStore:
    """Write per-utterance (frames, num_pdfs) log-likelihoods (or log posteriors if priors is None).

    `priors_source`: the alignment store the priors come from; its tree must be the model's."""
    ens, data = as_ensemble(scorer, device), as_data(feats, device=device, budget=budget)
    sides = [(ens.describe(), ens.tree_sha256)]
    if priors_source is not None:
        sides.append((f"priors {priors_source}", tree_of_dir(priors_source)))
    tree = check_same_tree(sides)
    if data.dim != ens.feat_dim:
        raise AsrKdError(f"{data.name}: feature dim {data.dim}, but the model reads {ens.feat_dim}")
    shift = log_priors(priors, ens.num_pdfs, prior_floor).to(data.device) if priors is not None else None
    meta = {"kind": "loglike" if shift is not None else "log_posterior", "num_pdfs": ens.num_pdfs,
            "combine": combine, "temperature": temperature, "features": str(data.name),
            "model_sha256": [sha256_file(p) for p in ens.sources], TREE_KEY: tree}
    offsets = data.offsets.tolist()  # host copy once: no device sync per utterance below
    with RaggedStoreWriter(out, dtype) as writer, tqdm(total=len(data.utt_ids), desc="loglikes", disable=None) as bar:
        for u0, u1 in data.sequential_ranges():
            for first, end, frames in utterance_chunks(offsets, u0, u1, batch_size, data.device):
                logp = ens.log_posteriors(data, frames, temperature, combine)
                if shift is not None:
                    logp = logp - shift
                rows = logp.cpu().numpy()
                base = offsets[first]
                for u in range(first, end):
                    writer.add(data.utt_ids[u], rows[offsets[u] - base:offsets[u + 1] - base])
                bar.update(end - first)
        return writer.close(meta)


@torch.no_grad()
def evaluate(scorer, feats, ali=None, *, combine: str = "arith", temperature: float = 1.0,
             batch_size: int = 8192, device="cpu", budget: int | str = "auto") -> dict:
    """Frame accuracy and cross-entropy (nats/frame) of the (combined) posterior on labelled frames."""
    ens, data = as_ensemble(scorer, device), as_data(feats, ali, device, budget)
    if isinstance(ali, (str, Path)):
        check_same_tree([(ens.describe(), ens.tree_sha256), (f"alignment {ali}", tree_of_dir(ali))])
    if data.num_pdfs is not None and data.num_pdfs != ens.num_pdfs:
        raise AsrKdError(f"{data.name}: alignment has {data.num_pdfs} pdfs, the model {ens.num_pdfs} (another GMM?)")
    total = data.num_labelled_frames()
    if total == 0:
        raise AsrKdError(f"{data.name}: no labelled frames to evaluate on (give an alignment store)")
    correct = torch.zeros((), dtype=torch.int64, device=data.device)
    nll = torch.zeros((), dtype=torch.float64, device=data.device)
    for frames in labelled_ranges(data):
        for start in range(0, len(frames), batch_size):
            idx = frames[start:start + batch_size]
            logp = ens.log_posteriors(data, idx, temperature, combine)
            y = data.labels_of(idx)
            correct += (logp.argmax(-1) == y).sum()
            nll -= logp.gather(1, y[:, None]).sum().double()
    return {"frame_acc": int(correct) / total, "ce": float(nll) / total, "num_frames": total}

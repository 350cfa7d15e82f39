"""A package's acoustic model (one backend) scored on a prepared set: frame accuracy and WER.

The int8 row of the report comes from here: the same package, the same stored features, the same
decode settings, once per backend, so the only difference between the rows is the backend.
Features come from the store (not audio) so the numbers are comparable with `eval-frames` and
`decode` of the exp dir; the store must have the package's feature config (hash checked).
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np

from asr_kd.data.features import load_features
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError
from asr_kd.nnet.infer import log_priors
from asr_kd.nnet.models import count_params

log = logging.getLogger(__name__)


def evaluate_package(package: str | os.PathLike, feats: str | os.PathLike, ali: str | os.PathLike,
                     text: str | os.PathLike | None = None, backend: str = "torch") -> dict:
    """{backend, frame_acc, num_frames, wer (with `text`), am_ms_per_s (wall clock), params, ...} on one set."""
    from asr_kd.deploy.transcribe import load_model

    model = load_model(package, backend)
    store = load_features(feats, expected_hash=model.package.meta["feature_config_hash"])
    labels = RaggedStore(ali)
    spec = model.acoustic_model.spec
    prior = log_priors(np.load(model.package.file("priors.npy")), spec.num_pdfs).numpy()
    correct = total = 0
    matrices, am_seconds = {}, 0.0
    for utt in store.keys:
        if utt not in labels.keys:
            continue
        x = np.asarray(store[utt], np.float32)
        start = time.perf_counter()
        loglikes = model.loglikes(x)
        am_seconds += time.perf_counter() - start
        y = np.asarray(labels[utt])
        if len(y) != len(x):
            raise AsrKdError(f"utterance {utt}: {len(y)} labels in {ali}, {len(x)} frames in {feats}")
        correct += int(((loglikes + prior).argmax(-1) == y).sum())
        total += len(y)
        matrices[utt] = loglikes
    if total == 0:
        raise AsrKdError(f"{feats}: no utterance with labels in {ali}")
    shift = model.feature_config.frame_shift_ms / 1000.0
    result = {"backend": backend, "package": str(model.package.path), "features": str(feats),
              "frame_acc": correct / total, "num_frames": total, "params": fp32_params(model),
              "am_ms_per_s": 1000.0 * am_seconds / (total * shift)}
    if text is not None:
        result.update(decode_and_score(model, matrices, text))
    return result


def fp32_params(model) -> int:
    """Parameters of the packaged network (int8 Linear layers hide theirs in packed weights: the
    count is the same network's)."""
    from asr_kd.nnet.models import load_model as load_net

    return count_params(load_net(model.package.file("model.pt"))[0])


def decode_and_score(model, matrices: dict[str, np.ndarray], text: str | os.PathLike) -> dict:
    from asr_kd.decode.decoder import decode_all
    from asr_kd.decode.scoring import read_text_table, wer

    hyps, stats = decode_all(model.decoder, matrices, model.package.decode["acoustic_scale"])
    refs = read_text_table(text)
    score = wer({u: refs[u] for u in hyps if u in refs}, hyps)
    return {"wer": score.summary(), "decode_rtf": stats.real_time_factor}

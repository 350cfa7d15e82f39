"""Is system B's WER really better than A's on this test set? Paired bootstrap over utterances
(Bisani & Ney, "Bootstrap estimates for confidence intervals in ASR performance evaluation",
ICASSP 2004).

Both systems decoded the same test utterances; per utterance we have A's and B's word errors and
the reference word count. Resampling utterances with replacement (the same draw for both systems:
that pairing is what removes the between-utterance variance from the difference) gives the
distribution of WER(A) - WER(B). Reported: the observed difference, its 95% percentile interval,
and the probability of improvement, P(WER(B) < WER(A)) over the resamples (ties do not count).
On AN4's 130 test utterances one error is 0.13% WER, so this is what separates a real difference
from a lucky one.

Written with numpy (a few lines) rather than a dependency: the toolkits that ship it (Kaldi's
`compute-wer-bootci`, SCTK's sc_stats) are not pip-installable here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_kd.decode.scoring import read_text_table, wer
from asr_kd.errors import AsrKdError


@dataclass
class UttErrors:
    """Per-utterance word errors (S + D + I) and reference words of one decode, by utterance id."""

    utt_ids: list[str]
    errors: np.ndarray
    words: np.ndarray

    @property
    def wer(self) -> float:
        return 100.0 * self.errors.sum() / max(int(self.words.sum()), 1)


def utt_errors(decode_dir: str | os.PathLike) -> UttErrors:
    """From a decode dir's ref.txt and hyp.txt (written by `decode`), re-aligned with jiwer."""
    d = Path(decode_dir)
    for name in ("ref.txt", "hyp.txt"):
        if not (d / name).is_file():
            raise AsrKdError(f"{d}: no {name}; per-utterance errors need a decode dir scored against a reference")
    result = wer(read_text_table(d / "ref.txt"), read_text_table(d / "hyp.txt"))
    errors = [sum(op != "C" for op, _, _ in a) for a in result.alignments]
    words = [sum(ref != "***" for _, ref, _ in a) for a in result.alignments]
    return UttErrors(result.utt_ids, np.asarray(errors, dtype=np.int64), np.asarray(words, dtype=np.int64))


@dataclass
class PairedBootstrap:
    wer_a: float
    wer_b: float
    difference: float  # WER(A) - WER(B), percent: > 0 = B better
    interval: tuple[float, float]  # 95% percentile interval of the difference
    prob_improvement: float  # P(WER(B) < WER(A)) over resamples
    utterances: int
    resamples: int

    def as_dict(self) -> dict:
        return {"wer_a": self.wer_a, "wer_b": self.wer_b, "difference": self.difference,
                "interval": list(self.interval), "prob_improvement": self.prob_improvement,
                "utterances": self.utterances, "resamples": self.resamples}


def paired_bootstrap(a: UttErrors, b: UttErrors, resamples: int = 10000, seed: int = 0) -> PairedBootstrap:
    """A = reference system (e.g. the baseline), B = the system claimed better (e.g. the student)."""
    if a.utt_ids != b.utt_ids or not np.array_equal(a.words, b.words):
        missing = sorted(set(a.utt_ids) ^ set(b.utt_ids))[:3]
        raise AsrKdError(f"paired bootstrap needs the same test utterances and references in both decodes "
                         f"(differ: {missing or 'reference word counts'}); decode both on the same set")
    if not a.utt_ids:
        raise AsrKdError("paired bootstrap: no utterances")
    idx = _resample(len(a.utt_ids), resamples, seed)
    words = a.words[idx].sum(1).clip(min=1)
    diff = 100.0 * (a.errors[idx].sum(1) - b.errors[idx].sum(1)) / words
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return PairedBootstrap(a.wer, b.wer, a.wer - b.wer, (float(lo), float(hi)), float((diff > 0).mean()),
                           len(a.utt_ids), resamples)


def wer_interval(a: UttErrors, resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of one system's WER (percent), utterances resampled."""
    idx = _resample(len(a.utt_ids), resamples, seed)
    rates = 100.0 * a.errors[idx].sum(1) / a.words[idx].sum(1).clip(min=1)
    lo, hi = np.percentile(rates, [2.5, 97.5])
    return float(lo), float(hi)


def _resample(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) utterance indices drawn with replacement, from a fixed seed (reproducible report)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))

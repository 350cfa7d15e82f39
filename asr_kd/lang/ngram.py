"""N-gram language models in ARPA format: an interpolated Kneser-Ney estimator, reader, writer, filter.

No maintained pip package writes ARPA files (kaldilm only reads them), so the estimator is ours:
interpolated Kneser-Ney (Chen & Goodman 1998) with one absolute discount per order,
D = n1 / (n1 + 2 n2), the highest order on raw counts and lower orders on continuation counts
(n-grams that begin with <s> keep raw counts, as SRILM/KenLM do). The unigram level is
interpolated with a uniform distribution over the vocabulary, so lexicon words never seen in
the training text keep a small probability. Interpolated KN is written exactly as a back-off
model: a seen n-gram stores its interpolated probability and a history's back-off weight is its
interpolation weight gamma(h) = D * N1+(h .) / c(h).
"""
from __future__ import annotations

import logging
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from asr_kd.errors import AsrKdError
from asr_kd.io import read_lines, write_text

log = logging.getLogger(__name__)

BOS, EOS = "<s>", "</s>"
NO_PROB = -99.0  # log10 "probability" of <s>, which is never predicted


@dataclass
class ArpaModel:
    """ngrams[k] maps a k-tuple of words to (log10 prob, log10 back-off weight or None)."""
    ngrams: dict[int, dict[tuple[str, ...], tuple[float, float | None]]] = field(default_factory=dict)

    @property
    def order(self) -> int:
        return max(self.ngrams)

    @property
    def vocab(self) -> set[str]:
        return {w for (w,) in self.ngrams.get(1, {})}

    def log10_prob(self, word: str, history: tuple[str, ...]) -> float:
        """log10 p(word | history) by the ARPA back-off rule."""
        history = history[-(self.order - 1):] if self.order > 1 else ()
        penalty = 0.0
        while True:
            entry = self.ngrams.get(len(history) + 1, {}).get(history + (word,))
            if entry is not None:
                return penalty + entry[0]
            if not history:
                return -math.inf
            bow = self.ngrams.get(len(history), {}).get(history, (0.0, None))[1]
            penalty += bow or 0.0
            history = history[1:]


def train_kneser_ney(sentences: Iterable[list[str]], order: int = 2, vocab: Iterable[str] = ()) -> ArpaModel:
    """Estimate an interpolated Kneser-Ney model of `order` from tokenised sentences (no <s>/</s>)."""
    if order < 1:
        raise AsrKdError(f"n-gram order must be >= 1, got {order}")
    raw = _raw_counts(sentences, order)
    if not raw[1]:
        raise AsrKdError("no training text for the language model")
    counts = _kn_counts(raw, order)
    vocab_set = ({w for (w,) in raw[1]} | set(vocab) | {EOS}) - {BOS}
    probs: dict[int, dict[tuple[str, ...], float]] = {}
    gammas: dict[tuple[str, ...], float] = {}
    probs[1] = _unigram_probs(counts[1], vocab_set, gammas)
    for k in range(2, order + 1):
        probs[k] = _higher_probs(counts[k], probs[k - 1], gammas)
    model = ArpaModel()
    for k in range(1, order + 1):
        model.ngrams[k] = {g: (math.log10(p), _bow(g, k, order, gammas)) for g, p in sorted(probs[k].items())}
    model.ngrams[1][(BOS,)] = (NO_PROB, math.log10(gammas[(BOS,)]) if order > 1 else None)
    return model


def _raw_counts(sentences: Iterable[list[str]], order: int) -> dict[int, Counter]:
    raw = {k: Counter() for k in range(1, order + 1)}
    for words in sentences:
        padded = [BOS, *words, EOS]
        for k in range(1, order + 1):
            for end in range(1, len(padded)):  # n-grams end on a predicted word (never <s>)
                if end - k + 1 >= 0:
                    raw[k][tuple(padded[end - k + 1:end + 1])] += 1
    return raw


def _kn_counts(raw: dict[int, Counter], order: int) -> dict[int, Counter]:
    """Raw counts for the top order and for n-grams starting with <s>; continuation counts otherwise."""
    counts = {order: raw[order]}
    for k in range(1, order):
        left_contexts = Counter(g[1:] for g in raw[k + 1])  # distinct words seen before each k-gram
        counts[k] = Counter({g: (c if g[0] == BOS else left_contexts[g]) for g, c in raw[k].items()})
    return counts


def _discount(counts: Counter) -> float:
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    return n1 / (n1 + 2 * n2) if n1 > 0 and n2 > 0 else 0.5


def _unigram_probs(counts: Counter, vocab: set[str], gammas: dict) -> dict[tuple[str, ...], float]:
    d, total = _discount(counts), sum(counts.values())
    gamma = d * len(counts) / total
    return {(w,): max(counts.get((w,), 0) - d, 0.0) / total + gamma / len(vocab) for w in sorted(vocab)}


def _higher_probs(counts: Counter, lower: dict[tuple[str, ...], float], gammas: dict) -> dict[tuple[str, ...], float]:
    d = _discount(counts)
    history_total, history_types = Counter(), Counter()
    for g, c in counts.items():
        history_total[g[:-1]] += c
        history_types[g[:-1]] += 1
    for h in history_total:
        gammas[h] = d * history_types[h] / history_total[h]
    return {g: (c - d) / history_total[g[:-1]] + gammas[g[:-1]] * lower[g[1:]] for g, c in counts.items()}


def _bow(ngram: tuple[str, ...], k: int, order: int, gammas: dict) -> float | None:
    if k == order:
        return None
    return math.log10(gammas[ngram]) if ngram in gammas else 0.0


def write_arpa(model: ArpaModel, path: str | os.PathLike) -> None:
    """Write the model in ARPA format (atomically)."""
    lines = ["\\data\\"] + [f"ngram {k}={len(model.ngrams[k])}" for k in sorted(model.ngrams)] + [""]
    for k in sorted(model.ngrams):
        lines.append(f"\\{k}-grams:")
        for g, (lp, bow) in model.ngrams[k].items():
            lines.append(f"{lp:.6f}\t{' '.join(g)}" + ("" if bow is None else f"\t{bow:.6f}"))
        lines.append("")
    write_text(path, "\n".join(lines + ["\\end\\", ""]))


def read_arpa(path: str | os.PathLike) -> ArpaModel:
    """Read an ARPA file. Text before the first line that is exactly `\\data\\` is ignored (headers
    such as CMU's an4.lm quote `\\data\\` and `\\1-grams:` inside their comments)."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "\\data\\")
    except StopIteration:
        raise AsrKdError(f"{path}: no \\data\\ line; not an ARPA file") from None
    model, k = ArpaModel(), 0
    for lineno, line in enumerate(lines[start + 1:], start + 2):
        text = line.strip()
        if not text or text.startswith("ngram "):
            continue
        if text == "\\end\\":
            return model
        if text.startswith("\\") and text.endswith("-grams:"):
            k = int(text[1:-len("-grams:")])
            model.ngrams[k] = {}
            continue
        fields = text.split()
        if k == 0 or len(fields) not in (k + 1, k + 2):
            raise AsrKdError(f"{path}:{lineno}: malformed {k}-gram line {line!r}")
        bow = float(fields[k + 1]) if len(fields) == k + 2 else None
        model.ngrams[k][tuple(fields[1:k + 1])] = (float(fields[0]), bow)
    raise AsrKdError(f"{path}: missing \\end\\")


def restrict_vocab(model: ArpaModel, vocab: set[str], source: str = "") -> ArpaModel:
    """Drop n-grams with words outside `vocab` (plus <s>, </s>); G.fst can only hold lexicon words.

    Probabilities are not renormalised: the dropped words' mass is simply lost, as with Kaldi's
    arpa2fst skipping out-of-vocabulary n-grams.
    """
    keep = set(vocab) | {BOS, EOS}
    dropped = sorted(model.vocab - keep)
    if dropped:
        log.warning("%s: %d LM words not in the lexicon are dropped: %s", source or "LM", len(dropped),
                    " ".join(dropped[:20]) + (" ..." if len(dropped) > 20 else ""))
    out = ArpaModel({k: {g: v for g, v in grams.items() if all(w in keep for w in g)}
                     for k, grams in model.ngrams.items()})
    for k in sorted(out.ngrams, reverse=True):
        if not out.ngrams[k]:
            del out.ngrams[k]
    return out


def read_transcripts(path: str | os.PathLike) -> list[list[str]]:
    """Words of a Kaldi `text` file (utt-id word ...); a line with only an id is an empty sentence."""
    sentences = []
    for lineno, line in read_lines(path):
        fields = line.split()
        if not fields:
            raise AsrKdError(f"{path}:{lineno}: empty line")
        sentences.append(fields[1:])
    return sentences

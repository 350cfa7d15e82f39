"""Synthetic corpus with a known answer for the align tests: each phone HMM state has its own
feature mean, utterances are random word sequences with known phone boundaries."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_kd.data.store import write_store
from asr_kd.lang.prepare_lang import prepare_lang

PHONES = ["AA", "B", "K", "S", "IY"]
LEXICON = {"BAA": ["B", "AA"], "SEE": ["S", "IY"], "KEY": ["K", "IY"], "ABS": ["AA", "B", "S"], "ASK": ["AA", "S", "K"]}
DIM = 6


def make_lang(root: Path) -> Path:
    d = root / "dict"
    d.mkdir(parents=True)
    (d / "lexicon.txt").write_text("<UNK> SIL\n" + "".join(f"{w} {' '.join(p)}\n" for w, p in sorted(LEXICON.items())))
    (d / "nonsilence_phones.txt").write_text("".join(f"{p}\n" for p in PHONES))
    (d / "silence_phones.txt").write_text("SIL\n")
    (d / "optional_silence.txt").write_text("SIL\n")
    prepare_lang(d, root / "lang")
    return root / "lang"


def make_corpus(root: Path, num_utts: int = 40, seed: int = 0, noise: float = 0.35):
    """Feature store + transcripts + true phone segments {utt: [(phone, start, n)]}."""
    rng = np.random.default_rng(seed)
    state_means = {p: rng.normal(scale=2.0, size=(3, DIM)) for p in PHONES}
    state_means["SIL"] = np.zeros((3, DIM))
    words = sorted(LEXICON)
    feats, texts, truth = {}, {}, {}
    for i in range(num_utts):
        utt = f"utt{i:03d}"
        seq = list(rng.choice(words, size=rng.integers(1, 4)))
        phones = ["SIL"] + [p for w in seq for p in LEXICON[w]] + ["SIL"]
        rows, segs = [], []
        for p in phones:
            start = sum(len(r) for r in rows)
            for s in range(3):
                n = int(rng.integers(3, 7)) if p != "SIL" else int(rng.integers(4, 9))
                rows.append(state_means[p][s] + noise * rng.normal(size=(n, DIM)))
            segs.append((p, start, sum(len(r) for r in rows) - start))
        feats[utt], texts[utt], truth[utt] = np.concatenate(rows).astype(np.float32), " ".join(seq), segs
    store = write_store(root / "feats", sorted(feats.items()),
                        {"frame_shift_ms": 10.0, "config_hash": "synthetic", "dim": DIM})
    return store, texts, truth

"""Synthetic corpus with a known answer for the align tests: each phone has its own feature mean, utterances are random word sequences with known phone boundaries."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_kd.data.store import write_store
from asr_kd.lang.prepare_lang import prepare_lang

PHONES = ["AA", "B", "K", "S", "IY"]
LEXICON = {"AH": ["AA"], "BE": ["B", "IY"], "SEE": ["S", "IY"], "KEY": ["K", "IY"], "ABS": ["AA", "B", "S"],
           "ASK": ["AA", "S", "K"], "SKI": ["S", "K", "IY"], "BAA": ["B", "AA"]}
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
    """Feature store + transcripts + true phone segments {utt: [(phone, start, n)]}.

    Phone means are the same for every `seed`; the seed draws the utterances.
    """
    means_rng, rng = np.random.default_rng(1234), np.random.default_rng(seed)
    means = {p: means_rng.normal(scale=2.0, size=DIM) for p in PHONES}
    means["SIL"] = np.zeros(DIM)
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
                rows.append(means[p] + noise * rng.normal(size=(n, DIM)))
            segs.append((p, start, sum(len(r) for r in rows) - start))
        feats[utt], texts[utt], truth[utt] = np.concatenate(rows).astype(np.float32), " ".join(seq), segs
    store = write_store(root / "feats", sorted(feats.items()),
                        {"frame_shift_ms": 10.0, "config_hash": "synthetic", "dim": DIM})
    return store, texts, truth


def hyp_segments(ctm_path: Path) -> dict[str, list[tuple[str, int, int]]]:
    """CTM lines as {utt: [(phone, start frame, frames)]} (10 ms frames)."""
    out: dict[str, list] = {}
    for line in Path(ctm_path).read_text().splitlines():
        utt, _, start, dur, phone = line.split()
        out.setdefault(utt, []).append((phone, round(float(start) * 100), round(float(dur) * 100)))
    return out


def boundary_errors(truth: dict, hyp: dict) -> np.ndarray:
    """|hyp - true| start frame of each phone that follows a different non-silence phone.

    Silence is optional between words (the model may drop or absorb it) and a boundary between
    two copies of one phone is not identifiable from features, so both are left out. Raises
    AssertionError if the non-silence phone sequences differ.
    """
    errors = []
    for utt, segs in truth.items():
        ref = [s for s in segs if s[0] != "SIL"]
        got = [s for s in hyp[utt] if s[0] != "SIL"]
        assert [s[0] for s in ref] == [s[0] for s in got], (utt, ref, got)
        errors += [abs(r[1] - g[1]) for r, g, prev in zip(ref[1:], got[1:], ref) if prev[0] != r[0]]
    return np.array(errors)

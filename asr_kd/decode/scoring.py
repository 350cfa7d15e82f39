"""Word error rate with jiwer 4 (`process_words`), and the decode dir files that record it.

`write_wer_dir` writes hyp.txt, ref.txt (Kaldi `text` format), per_utt.txt (one aligned block per
utterance: REF/HYP rows with `***` for gaps and an OP row of C/S/D/I) and wer.json.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import jiwer

from asr_kd.errors import AsrKdError
from asr_kd.io import read_lines, write_json, write_text

OP_CODES = {"equal": "C", "substitute": "S", "delete": "D", "insert": "I"}


@dataclass
class WerResult:
    words: int                  # reference words
    substitutions: int
    deletions: int
    insertions: int
    utt_ids: list[str] = field(default_factory=list)
    alignments: list[list[tuple[str, str, str]]] = field(default_factory=list)  # per utt: (op, ref, hyp)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Percent."""
        return 100.0 * self.errors / max(self.words, 1)

    def summary(self) -> dict:
        return {"wer": round(self.wer, 4), "errors": self.errors, "words": self.words,
                "substitutions": self.substitutions, "deletions": self.deletions,
                "insertions": self.insertions, "utterances": len(self.utt_ids),
                "sentence_errors": sum(any(op != "C" for op, _, _ in a) for a in self.alignments)}

    def __str__(self) -> str:
        return (f"%WER {self.wer:.2f} [ {self.errors} / {self.words}, {self.insertions} ins, "
                f"{self.deletions} del, {self.substitutions} sub ]")


def wer(refs: dict[str, list[str] | str], hyps: dict[str, list[str] | str]) -> WerResult:
    """WER over the utterances of `refs`; an utterance missing from `hyps` counts as all deletions."""
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise AsrKdError(f"hypotheses for utterances without a reference: {extra[:5]}")
    if not refs:
        raise AsrKdError("no reference utterances to score")
    utt_ids = sorted(refs)
    ref_words = [_words(refs[u]) for u in utt_ids]
    hyp_words = [_words(hyps.get(u, [])) for u in utt_ids]
    out = jiwer.process_words([" ".join(w) for w in ref_words], [" ".join(w) for w in hyp_words])
    alignments = [_aligned(r, h, chunks) for r, h, chunks in zip(ref_words, hyp_words, out.alignments)]
    return WerResult(sum(map(len, ref_words)), out.substitutions, out.deletions, out.insertions, utt_ids, alignments)


def _words(x: list[str] | str) -> list[str]:
    return x.split() if isinstance(x, str) else list(x)


def _aligned(ref: list[str], hyp: list[str], chunks) -> list[tuple[str, str, str]]:
    rows = []
    for c in chunks:
        op = OP_CODES[c.type]
        r, h = ref[c.ref_start_idx:c.ref_end_idx], hyp[c.hyp_start_idx:c.hyp_end_idx]
        for i in range(max(len(r), len(h))):
            rows.append((op, r[i] if i < len(r) else "***", h[i] if i < len(h) else "***"))
    return rows


def write_wer_dir(out_dir: str | os.PathLike, result: WerResult, refs: dict, hyps: dict,
                  extra: dict | None = None) -> None:
    """Write hyp.txt, ref.txt, per_utt.txt, wer.json into `out_dir` (each file atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "ref.txt", _table(refs, result.utt_ids))
    write_text(out / "hyp.txt", _table(hyps, result.utt_ids))
    write_text(out / "per_utt.txt", "".join(_utt_block(u, a) for u, a in zip(result.utt_ids, result.alignments)))
    write_json(out / "wer.json", {**result.summary(), **(extra or {})})


def _table(texts: dict, utt_ids: list[str]) -> str:
    return "".join(f"{u} {' '.join(_words(texts.get(u, [])))}".rstrip() + "\n" for u in utt_ids)


def _utt_block(utt: str, rows: list[tuple[str, str, str]]) -> str:
    """Kaldi align-text style: ref / hyp / op rows with columns padded to a common width, then #csid."""
    widths = [max(len(r), len(h)) for _, r, h in rows]
    columns = {"ref": [r for _, r, _ in rows], "hyp": [h for _, _, h in rows], "op": [op for op, _, _ in rows]}
    lines = [f"{utt} {tag:<3} " + " ".join(c.ljust(w) for c, w in zip(cells, widths)) for tag, cells in columns.items()]
    counts = [sum(op == k for op, _, _ in rows) for k in "CSDI"]
    return "\n".join(line.rstrip() for line in lines) + f"\n{utt} #csid {' '.join(map(str, counts))}\n\n"


def read_text_table(path: str | os.PathLike) -> dict[str, list[str]]:
    """A Kaldi `text` file (utt word ...) as utt -> words; a repeated id is an error naming the line."""
    table = {}
    for lineno, line in read_lines(path):
        fields = line.split()
        if not fields:
            continue
        if fields[0] in table:
            raise AsrKdError(f"{path}:{lineno}: utterance {fields[0]} appears twice")
        table[fields[0]] = fields[1:]
    return table


def read_token_map(path: str | os.PathLike) -> dict[str, str | None]:
    """A scoring map as Kaldi's TIMIT `phones.60-48-39.map` columns: `token mapped` per line, a token alone
    is deleted before scoring (e.g. TIMIT's 48 phones -> the 39 that phone error rates are reported on)."""
    mapping: dict[str, str | None] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2 or fields[0] in mapping:
            raise AsrKdError(f"{path}:{lineno}: expected '<token> [<mapped token>]' once per token, got '{line.strip()}'")
        mapping[fields[0]] = fields[1] if len(fields) == 2 else None
    if not mapping:
        raise AsrKdError(f"{path}: empty scoring map")
    return mapping


def map_texts(texts: dict[str, list[str]], mapping: dict[str, str | None], what: str) -> dict[str, list[str]]:
    """Every utterance's tokens through `mapping`; a token the map lacks is an error naming the utterance."""
    out = {}
    for utt, words in texts.items():
        unknown = [w for w in words if w not in mapping]
        if unknown:
            raise AsrKdError(f"{what}: utterance {utt}: token '{unknown[0]}' is not in the scoring map; "
                             f"add it to the map (a token alone on its line is deleted)")
        out[utt] = [m for w in words if (m := mapping[w]) is not None]
    return out

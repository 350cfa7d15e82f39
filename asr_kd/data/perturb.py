"""Speed perturbation of a data dir (Ko et al. 2015; Kaldi's utils/data/perturb_data_dir_speed_3way.sh).

    perturb_speed("data/train", "data/train_sp", [0.9, 1.0, 1.1])

Each factor F != 1 adds a copy of every utterance whose utterance, speaker and recording ids carry
the prefix `spF-` (so each copy is a speaker of its own for CMVN, as in Kaldi); factor 1 keeps the
originals unchanged. The audio is not written out: a copy's wav.scp entry is Kaldi's own
`sox PATH -t wav - speed F |`, which `asr_kd.data.audio` recognises and performs in-process
with soxr when the features are computed (a Python transform cannot live in wav.scp, and a
`speed` side table would be a format only this package reads; Kaldi reads these entries with sox).
Segment times and utt2dur are divided by F, because the copy's audio is 1/F as long.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

from asr_kd.data.audio import speed_entry
from asr_kd.data.datadir import DataDir, Segment, load_datadir, write_datadir
from asr_kd.errors import AsrKdError

log = logging.getLogger(__name__)

KALDI_FACTORS = (0.9, 1.0, 1.1)


def speed_prefix(factor: float) -> str:
    """Kaldi's id prefix of a copy at `factor`: sp0.9-, sp1.1-."""
    return f"sp{factor:g}-"


def check_factors(factors: Sequence[float]) -> list[float]:
    factors = [float(f) for f in factors]
    bad = [f for f in factors if not 0.5 <= f <= 2.0]
    if bad:
        raise AsrKdError(f"speed factors {bad}: each must be in [0.5, 2.0] (Kaldi uses 0.9 1.0 1.1)")
    if len({speed_prefix(f) for f in factors}) != len(factors):
        raise AsrKdError(f"speed factors {factors}: a factor is given twice")
    return factors


def perturb_speed(src: str | os.PathLike | DataDir, dst: str | os.PathLike,
                  factors: Sequence[float] = KALDI_FACTORS) -> DataDir:
    """Write `dst` holding a copy of `src` per speed factor (factor 1: the originals); returns it."""
    data = src if isinstance(src, DataDir) else load_datadir(src)
    tables: dict[str, dict] = {"wav_scp": {}, "utt2spk": {}, "text": {}, "segments": {}, "utt2dur": {}}
    for factor in check_factors(factors):
        for name, table in speed_copy(data, factor).items():
            tables[name].update(table)
    present = {"text": data.text, "segments": data.segments, "utt2dur": data.utt2dur}
    out = write_datadir(dst, wav_scp=tables["wav_scp"], utt2spk=tables["utt2spk"],
                        **{name: tables[name] if present[name] is not None else None for name in present})
    log.info("%s: %d utterances from %d at speeds %s", out.path, len(out), len(data), " ".join(map(str, factors)))
    return out


def speed_copy(data: DataDir, factor: float) -> dict[str, Mapping]:
    """The tables of one copy of `data` at `factor` (ids prefixed, entries wrapped, times scaled)."""
    if factor == 1.0:
        return {"wav_scp": data.wav_scp, "utt2spk": data.utt2spk, "text": data.text or {},
                "segments": data.segments or {}, "utt2dur": data.utt2dur or {}}
    pre = speed_prefix(factor)
    return {
        "wav_scp": {pre + rec: speed_entry(entry, factor) for rec, entry in data.wav_scp.items()},
        "utt2spk": {pre + utt: pre + spk for utt, spk in data.utt2spk.items()},
        "text": {pre + utt: words for utt, words in (data.text or {}).items()},
        "segments": {pre + utt: Segment(pre + seg.recording, seg.start / factor,
                                        seg.end / factor if seg.end != -1 else -1)
                     for utt, seg in (data.segments or {}).items()},
        "utt2dur": {pre + utt: dur / factor for utt, dur in (data.utt2dur or {}).items()},
    }

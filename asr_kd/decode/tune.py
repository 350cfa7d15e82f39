"""Choose the acoustic scale on a dev set, then decode the test set with it fixed.

Kaldi's best_wer.sh picks the LM weight on the set it reports, which flatters the numbers; here
the test set is decoded once, with the scale that was best on dev. With a single-pass decoder the
acoustic scale is the only acoustic/LM balance knob (LM weight = 1 / acoustic scale).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from asr_kd.decode.decoder import Decoder, DecodeStats, decode_all
from asr_kd.decode.scoring import WerResult, wer

log = logging.getLogger(__name__)

DEFAULT_SCALES = (0.0333, 0.04, 0.05, 0.0667, 0.0833, 0.1, 0.125, 0.1667)


@dataclass
class TunedDecode:
    acoustic_scale: float
    dev_wer: dict[float, WerResult]        # every scale tried
    hyps: dict[str, list[str]]             # test hypotheses at the chosen scale
    stats: DecodeStats


def tune_and_decode(decoder: Decoder, dev_loglikes: Mapping[str, np.ndarray], dev_refs: Mapping[str, list[str]],
                    test_loglikes: Mapping[str, np.ndarray], scales: Sequence[float] = DEFAULT_SCALES) -> TunedDecode:
    """Decode dev at each scale, keep the lowest-WER scale (ties: the smaller scale), decode test with it."""
    dev_wer = {}
    for scale in scales:
        hyps, _ = decode_all(decoder, dev_loglikes, scale)
        dev_wer[scale] = wer(dict(dev_refs), hyps)
        log.info("dev acoustic scale %g: %s", scale, dev_wer[scale])
    best = min(scales, key=lambda s: (dev_wer[s].errors, s))
    log.info("chosen acoustic scale %g (dev WER %.2f%%)", best, dev_wer[best].wer)
    hyps, stats = decode_all(decoder, test_loglikes, best)
    return TunedDecode(best, dev_wer, hyps, stats)

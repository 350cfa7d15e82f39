"""Choose the acoustic scale and word insertion penalty on a dev set, then decode test with them fixed.

Kaldi's best_wer.sh picks the LM weight on the set it reports, which flatters the numbers; here
the test set is decoded once, with the setting that was best on dev. With a single-pass decoder
the acoustic scale is the acoustic/LM balance (LM weight = 1 / acoustic scale); the word
insertion penalty is the cost added per hypothesised word (Kaldi's scoring tries 0, 0.5, 1).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from asr_kd.decode.decoder import Decoder, DecodeStats, decode_all
from asr_kd.decode.scoring import WerResult, wer

log = logging.getLogger(__name__)

DEFAULT_SCALES = (0.0333, 0.04, 0.05, 0.0667, 0.0833, 0.1, 0.125, 0.1667)
DEFAULT_PENALTIES = (0.0,)


@dataclass
class TunedDecode:
    acoustic_scale: float
    word_penalty: float
    dev_wer: dict[tuple[float, float], WerResult]   # (acoustic scale, word penalty) -> dev result
    hyps: dict[str, list[str]]                      # test hypotheses with the chosen setting
    stats: DecodeStats


def tune_and_decode(graph_dir: str | os.PathLike, model_path: str | os.PathLike,
                    dev_loglikes: Mapping[str, np.ndarray], dev_refs: Mapping[str, list[str]],
                    test_loglikes: Mapping[str, np.ndarray], scales: Sequence[float] = DEFAULT_SCALES,
                    penalties: Sequence[float] = DEFAULT_PENALTIES, num_jobs: int = 1,
                    **decoder_options) -> TunedDecode:
    """Decode dev on the (scale x penalty) grid, keep the fewest errors (ties: smaller scale, then
    smaller penalty), decode test with it. `decoder_options`: beam, lattice_beam, max_active."""
    dev_wer, decoders = {}, {}
    for penalty in penalties:
        decoders[penalty] = Decoder(graph_dir, model_path, word_penalty=penalty, **decoder_options)
        for scale in scales:
            hyps, _ = decode_all(decoders[penalty], dev_loglikes, scale, num_jobs)
            dev_wer[(scale, penalty)] = wer(dict(dev_refs), hyps)
            log.info("dev acoustic scale %g, word penalty %g: %s", scale, penalty, dev_wer[(scale, penalty)])
    scale, penalty = min(dev_wer, key=lambda k: (dev_wer[k].errors, k))
    log.info("chosen acoustic scale %g, word penalty %g (dev WER %.2f%%)", scale, penalty,
             dev_wer[(scale, penalty)].wer)
    hyps, stats = decode_all(decoders[penalty], test_loglikes, scale, num_jobs)
    return TunedDecode(scale, penalty, dev_wer, hyps, stats)

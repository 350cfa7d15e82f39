"""Choose the acoustic scale and word insertion penalty on a dev set, then decode test with them fixed.

Kaldi's best_wer.sh picks the LM weight on the set it reports, which flatters the numbers; here
the test set is decoded once, with the setting that was best on dev. With a single-pass decoder
the acoustic scale is the acoustic/LM balance (LM weight = 1 / acoustic scale); the word
insertion penalty is the cost added per hypothesised word (Kaldi's scoring tries 0, 0.5, 1).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

from asr_kd.decode.decoder import DecodeJob, DecodeStats, decode_store
from asr_kd.decode.scoring import WerResult, wer
from asr_kd.parallel import Jobs

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


def tune_and_decode(dev_job: DecodeJob, dev_refs: Mapping[str, list[str]], test_job: DecodeJob,
                    scales: Sequence[float] = DEFAULT_SCALES, penalties: Sequence[float] = DEFAULT_PENALTIES,
                    jobs: Jobs = Jobs()) -> TunedDecode:
    """Decode dev on the (scale x penalty) grid, keep the fewest errors (ties: smaller scale, then
    smaller penalty), decode test with it; both sharded over `jobs`."""
    grid = [(scale, penalty) for penalty in penalties for scale in scales]
    dev = decode_store(dev_job, grid, jobs)
    dev_wer = {}
    for scale, penalty in grid:
        dev_wer[(scale, penalty)] = wer(dict(dev_refs), dev[(scale, penalty)][0])
        log.info("dev acoustic scale %g, word penalty %g: %s", scale, penalty, dev_wer[(scale, penalty)])
    scale, penalty = min(dev_wer, key=lambda k: (dev_wer[k].errors, k))
    log.info("chosen acoustic scale %g, word penalty %g (dev WER %.2f%%)", scale, penalty,
             dev_wer[(scale, penalty)].wer)
    hyps, stats = decode_store(test_job, [(scale, penalty)], jobs)[(scale, penalty)]
    return TunedDecode(scale, penalty, dev_wer, hyps, stats)

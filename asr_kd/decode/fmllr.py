"""The first pass of fMLLR decoding (Kaldi's steps/decode_fmllr.sh), giving the adapted features of a set.

    speaker-independent view (the SAT model's LDA+MLLT) -> decode with si/final.mdl (final.alimdl)
    at a fixed first-pass acoustic scale (decode_fmllr.sh: 1/12) -> the best path's words
    -> `asr_kd.align.sat.adapt_set`: aligned with si/final.mdl, per-speaker fMLLR with final.mdl,
       silence weighted 0.01 (decode_fmllr.sh's default) -> an adapted view
The second pass is an ordinary `decode` of the adapted views with final.mdl (tuned on dev).
Kaldi estimates from first-pass lattice posteriors; the best path's alignment is that lattice's
one-best, which is what this uses (no lattice posteriors are kept by our decoder).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from asr_kd.align.alignment import AlignConfig
from asr_kd.align.sat import adapt_set
from asr_kd.data.datadir import read_table
from asr_kd.data.feature_view import model_view
from asr_kd.decode.decoder import DecodeJob, decode_store
from asr_kd.errors import AsrKdError
from asr_kd.io import write_text
from asr_kd.parallel import Jobs

log = logging.getLogger(__name__)


def first_pass_adapt(graph_dir: str | Path, sat_dir: str | Path, store: str | Path, data_dir: str | Path,
                     lang_dir: str | Path, out_view: str | Path, *, acoustic_scale: float = 1 / 12,
                     silence_weight: float = 0.01, beam: float = 13.0, jobs: Jobs = Jobs()) -> dict:
    """Decode `store` speaker-independently, then write its fMLLR-adapted view at `out_view`.
    The first-pass hypotheses are kept as `<out_view>.si_hyp.txt`. Returns adapt_set's summary."""
    sat_dir, out_view = Path(sat_dir), Path(out_view)
    if not (sat_dir / "si" / "final.mdl").is_file():
        raise AsrKdError(f"{sat_dir}: no si/final.mdl; not a SAT model dir (train it with `asr-kd train-sat`)")
    si_view = model_view(sat_dir, store, out_view.with_name(out_view.name + ".si_decode"))
    job = DecodeJob(str(graph_dir), str(sat_dir / "si" / "final.mdl"), str(si_view.path), gmm=True, beam=beam)
    hyps, stats = decode_store(job, [(acoustic_scale, 0.0)], jobs)[(acoustic_scale, 0.0)]
    shutil.rmtree(si_view.path, ignore_errors=True)
    write_text(out_view.with_name(out_view.name + ".si_hyp.txt"),
               "".join(f"{u} {' '.join(w)}\n" for u, w in sorted(hyps.items())))
    texts = {u: " ".join(w) for u, w in hyps.items()}
    utt2spk = read_table(Path(data_dir) / "utt2spk")
    summary = adapt_set(sat_dir, store, texts, utt2spk, lang_dir, out_view, silence_weight=silence_weight,
                        align=AlignConfig(), jobs=jobs)
    log.info("%s: first pass at acoustic scale %g (%d utterances), fMLLR for %d speakers", out_view,
             acoustic_scale, stats.num_utts, summary["speakers"])
    return summary

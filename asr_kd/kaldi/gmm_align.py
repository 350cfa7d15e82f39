"""Training graphs and forced alignment with a GMM-HMM (compile-train-graphs, align-equal-compiled,
gmm-align-compiled), and graph archives so that a training run compiles each graph once.

Measured trap (DESIGN.md §3): alignment with a weak model can fail silently (empty result), so
`align_compiled` returns None unless the alignment covers every frame.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import asr_kd.kaldi  # noqa: F401  (import order of the k2-fsa packages)
import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

from asr_kd.io import atomic_path


def graph_compiler(tm, tree, lex_fst, disambig_ids: Sequence[int]) -> khg.TrainingGraphCompiler:
    """compile-train-graphs: the compiler for per-utterance graphs from L.fst (olabel-sorted here).

    As compile-train-graphs, the graphs carry no transition probabilities (transition and self-loop
    scales 0; the options' own defaults are 1): `align_compiled` adds the current model's at every
    alignment. With the defaults, the first model's probabilities (self-loops at scale 1, not 0.1)
    stayed in every graph on top of the current ones, so each frame in one of silence's ergodic
    states cost -log 0.25 more: silence collapsed to one state and words absorbed the pauses.
    """
    kaldifst.arcsort(lex_fst, sort_type="olabel")
    opts = khg.TrainingGraphCompilerOptions()
    opts.transition_scale, opts.self_loop_scale = 0.0, 0.0
    return khg.TrainingGraphCompiler(trans_model=tm, ctx_dep=tree, lex_fst=lex_fst,
                                     disambig_syms=list(disambig_ids), opts=opts)


def write_graphs(path: str | os.PathLike, graphs: Iterable[tuple[str, object]]) -> None:
    """An archive of (utterance, graph) FSTs (Kaldi's fsts.JOB.gz), written atomically."""
    with atomic_path(path) as tmp:
        writer = kaldifst.VectorFstWriter(f"ark:{tmp}")
        for utt, graph in graphs:
            writer.write(utt, graph)
        writer.close()


def read_graphs(path: str | os.PathLike) -> dict:
    """{utterance: graph} from an archive written by `write_graphs` (~10x faster than recompiling)."""
    reader, graphs = kaldifst.SequentialVectorFstReader(f"ark:{path}"), {}
    while not reader.done:
        graphs[reader.key] = kaldifst.StdVectorFst(reader.value)  # the reader reuses its value
        reader.next()
    return graphs


def equal_align(graph, num_frames: int, utt: str) -> np.ndarray | None:
    """align-equal-compiled: a path of `graph` with equal-length segments; None if impossible.

    The path through the graph's optional silences is drawn at random, seeded as Kaldi seeds it,
    from the utterance id (`kaldi_string_hash`). One seed for every utterance would draw the same
    choices for every transcript of the same shape: on yesno (every utterance 8 words) seed 0 put
    no silence before the first word of any utterance, the first word's phone learnt the leading
    silence, and the monophones inserted that word at the start of test utterances.
    """
    ok, path_fst = kaldifst.equal_align(ifst=graph, length=num_frames, rand_seed=kaldi_string_hash(utt),
                                        num_retries=10)
    if not ok:
        return None
    ok, tids, _, _ = kaldifst.get_linear_symbol_sequence(path_fst)
    tids = np.asarray(tids, np.int32)
    return tids if ok and len(tids) == num_frames else None


def kaldi_string_hash(text: str) -> int:
    """Kaldi's StringHasher (util/stl-utils.h: h = h * 7853 + byte, in size_t) cast to int32, the
    seed align-equal-compiled gives EqualAlign for utterance `text`."""
    h = 0
    for byte in text.encode("utf-8"):
        h = (h * 7853 + (byte if byte < 128 else byte - 256)) % 2**64  # C++ char is signed here
    h %= 2**32
    return h - 2**32 if h >= 2**31 else h


def align_compiled(am, tm, graph, feats: np.ndarray, *, beam: float, retry_beam: float,
                   acoustic_scale: float = 0.1, transition_scale: float = 1.0,
                   self_loop_scale: float = 0.1) -> tuple[np.ndarray | None, float]:
    """gmm-align-compiled for one utterance. Returns (tids or None on failure, log-likelihood)."""
    fst = graph.copy()
    khg.add_transition_probs(trans_model=tm, transition_scale=transition_scale,
                             self_loop_scale=self_loop_scale, fst=fst)
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    decodable = khg.DecodableAmDiagGmmScaled(am=am, tm=tm, feats=feats, scale=acoustic_scale)
    config = khg.AlignConfig(beam=beam, retry_beam=retry_beam, careful=False)
    _, _, _, like, _, tids, _ = khg.align_utterance_wrapper(
        config=config, utt="", acoustic_scale=acoustic_scale, fst=fst, decodable=decodable,
        num_done=0, num_error=0, num_retried=0, tot_like=0.0, frame_count=0)
    tids = np.asarray(tids, np.int32)
    return (tids if len(tids) == len(feats) else None), float(like)

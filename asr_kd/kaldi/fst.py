"""Adapter over kaldifst / kaldilm / kaldi-hmm-gmm graph functions: FST I/O, G from ARPA, HCLG.

Everything that touches an OpenFst object goes through here, so the rest of asr_kd speaks in
plain Python (arc tuples, label lists, paths). Measured traps (DESIGN.md §3) handled here:
kaldifst 1.7.17 has no rmsymbols / rmepslocal and no mutable arc iterator, so disambiguation
symbols are removed by rebuilding the FST with them mapped to epsilon, then `rmepsilon`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import asr_kd.kaldi  # noqa: F401  (imports kaldi_decoder before kaldilm)
import kaldifst

from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path

log = logging.getLogger(__name__)

INF = float("inf")


class Arc(NamedTuple):
    src: int
    dst: int
    ilabel: int
    olabel: int
    weight: float = 0.0


def fst_from_arcs(arcs: Iterable[Arc | tuple], start: int, finals: dict[int, float]) -> kaldifst.StdVectorFst:
    """Build a StdVectorFst (tropical) from arc tuples; states are created up to the largest id."""
    arcs = [Arc(*a) for a in arcs]
    num_states = 1 + max([start, *finals, *(a.src for a in arcs), *(a.dst for a in arcs)])
    fst = kaldifst.StdVectorFst()
    for _ in range(num_states):
        fst.add_state()
    fst.start = start
    for a in arcs:
        fst.add_arc(state=a.src, arc=kaldifst.StdArc(ilabel=a.ilabel, olabel=a.olabel,
                                                     weight=a.weight, nextstate=a.dst))
    for state, weight in finals.items():
        fst.set_final(state=state, weight=weight)
    return fst


def fst_arcs(fst) -> list[Arc]:
    """All arcs of an FST as plain tuples."""
    return [Arc(s, a.nextstate, a.ilabel, a.olabel, a.weight.value)
            for s in kaldifst.StateIterator(fst) for a in kaldifst.ArcIterator(fst, s)]


def fst_finals(fst) -> dict[int, float]:
    return {s: fst.final(s).value for s in kaldifst.StateIterator(fst) if fst.final(s).value != INF}


def map_ilabels(fst, mapping: dict[int, int]) -> kaldifst.StdVectorFst:
    """A copy of `fst` with input labels replaced through `mapping` (e.g. disambig ids -> 0)."""
    arcs = [a._replace(ilabel=mapping.get(a.ilabel, a.ilabel)) for a in fst_arcs(fst)]
    return fst_from_arcs(arcs, fst.start, fst_finals(fst))


def write_fst(fst, path: str | os.PathLike) -> None:
    """Write an FST in OpenFst binary format, atomically."""
    with atomic_path(path) as tmp:
        fst.write(str(tmp))


def read_fst(path: str | os.PathLike) -> kaldifst.StdVectorFst:
    if not Path(path).is_file():
        raise AsrKdError(f"{path}: FST file not found")
    return kaldifst.StdVectorFst.read(str(path))


def best_path(fst, ilabels: Sequence[int]) -> tuple[list[int], float] | None:
    """Output labels and cost of the cheapest path of `fst` reading `ilabels`; None if it rejects them."""
    acceptor = kaldifst.make_linear_acceptor(list(ilabels))
    graph = fst.copy()
    kaldifst.arcsort(graph, sort_type="ilabel")
    composed = kaldifst.compose(acceptor, graph)
    if composed.num_states == 0:
        return None
    shortest = kaldifst.shortest_path(composed)
    ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(shortest)
    if not ok or shortest.start < 0:
        return None
    return list(olabels), weight.value


def arpa_to_fst(arpa_path: str | os.PathLike, words_txt: str | os.PathLike, out_path: str | os.PathLike,
                *, disambig_symbol: str = "#0") -> None:
    """G.fst from an ARPA file with kaldilm (words must all be in words.txt; filter the ARPA first)."""
    import kaldilm  # after kaldi_decoder (asr_kd.kaldi), see module docstring

    text = kaldilm.arpa2fst(input_arpa=str(arpa_path), disambig_symbol=disambig_symbol,
                            read_symbol_table=str(words_txt))
    G = kaldifst.compile(s=text, acceptor=False)
    kaldifst.arcsort(G, sort_type="ilabel")
    write_fst(G, out_path)


def sort_and_write(fst, path: str | os.PathLike, sort_type: str = "ilabel") -> None:
    """Arc-sort (on `sort_type`: "ilabel" or "olabel") and write atomically."""
    kaldifst.arcsort(fst, sort_type=sort_type)
    write_fst(fst, path)


def compile_hclg(L_disambig, G, tree, trans_model, disambig_phones: Sequence[int], *,
                 transition_scale: float = 1.0, self_loop_scale: float = 0.1) -> kaldifst.StdVectorFst:
    """HCLG as Kaldi's utils/mkgraph.sh builds it, with the steps kaldifst 1.7.17 lacks replaced.

    LG = det*(L_disambig o G) (log semiring), minimized encoded; CLG = C o LG (compose_context);
    HCLGa = det*(Ha o CLG) with the disambiguation transition ids mapped to epsilon and removed
    (rebuild + rmepsilon for fstrmsymbols + fstrmepslocal), minimized; then self-loops added.
    """
    import kaldi_hmm_gmm as khg

    L_disambig, G = L_disambig.copy(), G.copy()
    kaldifst.arcsort(L_disambig, sort_type="olabel")
    kaldifst.arcsort(G, sort_type="ilabel")
    LG = kaldifst.compose(L_disambig, G)
    _determinize(LG, "LG")
    kaldifst.minimize_encoded(LG)
    CLG, ilabels = kaldifst.compose_context(disambig_syms=list(disambig_phones), context_width=tree.context_width,
                                            central_position=tree.central_position, ifst=LG)
    kaldifst.arcsort(CLG, sort_type="ilabel")
    Ha, disambig_tids = khg.get_h_transducer(ilabel_info=ilabels, ctx_dep=tree, trans_model=trans_model,
                                             config=khg.HTransducerConfig(transition_scale=transition_scale))
    HCLGa = kaldifst.compose(Ha, CLG)
    _determinize(HCLGa, "HCLGa")
    HCLGa = map_ilabels(HCLGa, {t: 0 for t in disambig_tids})
    kaldifst.rmepsilon(HCLGa)
    kaldifst.minimize_encoded(HCLGa)
    HCLG = khg.add_self_loops(self_loop_scale=self_loop_scale, disambig_syms=[], reorder=True,
                              trans_model=trans_model, ifst=HCLGa)
    kaldifst.arcsort(HCLG, sort_type="ilabel")
    log.info("graph sizes (states/arcs): LG %d/%d, CLG %d/%d, HCLG %d/%d", LG.num_states, _num_arcs(LG),
             CLG.num_states, _num_arcs(CLG), HCLG.num_states, _num_arcs(HCLG))
    return HCLG


def _determinize(fst, name: str) -> None:
    try:
        stopped = kaldifst.determinize_star(fst, use_log=True)
    except RuntimeError as e:
        raise AsrKdError(f"determinization of {name} failed ({e}); is the lexicon disambiguated "
                         f"(L_disambig.fst) and G built with #0 on back-off arcs?") from e
    if stopped:
        raise AsrKdError(f"determinization of {name} stopped early (max states)")


def _num_arcs(fst) -> int:
    return sum(fst.num_arcs(s) for s in kaldifst.StateIterator(fst))


def add_word_penalty(fst, penalty: float) -> kaldifst.StdVectorFst:
    """A copy of `fst` with `penalty` added to every arc that outputs a word (insertion penalty)."""
    arcs = [a._replace(weight=a.weight + penalty) if a.olabel != 0 else a for a in fst_arcs(fst)]
    out = fst_from_arcs(arcs, fst.start, fst_finals(fst))
    kaldifst.arcsort(out, sort_type="ilabel")
    return out

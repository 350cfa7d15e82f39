"""Word lattices of one decode, rescored over a grid of (acoustic scale, word penalty) points.

Kaldi tunes the LM weight by decoding a set once into lattices and rescoring them (score.sh:
lattice-scale --inv-acoustic-scale=LMWT | lattice-add-penalty --word-ins-penalty=WIP |
lattice-best-path). Here the lattice is the raw state-level lattice of Kaldi's LatticeSimpleDecoder
(kaldi-decoder: `get_raw_lattice`; kaldi-hmm-gmm's lattice-faster binding returns only the best
path), kept within `lattice_beam` of the best path. Each arc carries a graph cost (LM + transition
+ pronunciation) and an acoustic cost; `WordLattice` stores the acoustic cost unscaled (divided by
the scale it was decoded with), as Kaldi writes its lattices, so any acoustic scale can be applied.

The best path of one grid point minimises graph + scale * acoustic + penalty * words, which is the
path a fresh decode with that scale and penalty finds whenever it lies inside the lattice beam.
Why hand-written: kaldifst exposes no lattice determinisation, and its `shortest_path` takes one
(scale, penalty) at a time, costing a lattice copy and an arc pass in Python per grid point. One
Viterbi pass in numpy over the topologically ordered lattice, with a column per grid point, finds
every point's best path at once (about the cost of a single point).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from asr_kd.errors import AsrKdError

INF = float("inf")


@dataclass
class WordLattice:
    """A state-level lattice as arrays, arcs ordered by the topological level of their end state."""
    src: np.ndarray        # (arcs,) int64
    dst: np.ndarray        # (arcs,) int64
    words: np.ndarray      # (arcs,) int64 output label (word id, 0 = none)
    graph: np.ndarray      # (arcs,) float64 graph cost
    acoustic: np.ndarray   # (arcs,) float64 acoustic cost, unscaled (-log-likelihood)
    level_starts: np.ndarray  # arcs[level_starts[i]:level_starts[i+1]] end in states of level i + 1
    segments: np.ndarray      # first arc of each run of arcs with the same end state (then len(arcs))
    level_segments: np.ndarray  # segments[level_segments[i]:level_segments[i+1]] are level i + 1's runs
    start: int
    num_states: int
    final_states: np.ndarray     # (finals,) int64
    final_graph: np.ndarray      # (finals,) float64
    final_acoustic: np.ndarray   # (finals,) float64
    reached_final: bool

    @property
    def num_arcs(self) -> int:
        return len(self.src)


def from_kaldi(lattice, acoustic_scale: float, reached_final: bool, utt: str = "") -> WordLattice:
    """A kaldifst.Lattice decoded with `acoustic_scale` (weights: graph cost, scaled acoustic cost)."""
    arcs, finals = [], []
    for line in lattice.to_str(show_weight_one=True).splitlines():
        fields = line.split()
        if len(fields) == 5:
            g, a = fields[4].split(",")
            arcs.append((int(fields[0]), int(fields[1]), int(fields[3]), float(g), float(a)))
        elif len(fields) == 2:
            g, a = fields[1].split(",")
            finals.append((int(fields[0]), float(g), float(a)))
    if lattice.num_states == 0 or not finals:
        raise AsrKdError(f"utterance {utt}: the decoder produced an empty lattice (no path survived the beam)")
    src, dst, words = (np.array([a[i] for a in arcs], np.int64) for i in range(3))
    graph, acoustic = (np.array([a[i] for a in arcs], np.float64) for i in (3, 4))
    level = _levels(src, dst, lattice.num_states, lattice.start, utt)
    order = np.lexsort((dst, level[dst]))
    level_starts = np.searchsorted(level[dst][order], np.arange(1, level.max() + 2))
    segments = np.flatnonzero(np.r_[True, dst[order][1:] != dst[order][:-1], True])
    level_segments = np.searchsorted(segments, level_starts)
    f_states = np.array([f[0] for f in finals], np.int64)
    return WordLattice(src[order], dst[order], words[order], graph[order], acoustic[order] / acoustic_scale,
                       level_starts, segments, level_segments, lattice.start, lattice.num_states, f_states,
                       np.array([f[1] for f in finals]), np.array([f[2] for f in finals]) / acoustic_scale,
                       reached_final)


def _levels(src: np.ndarray, dst: np.ndarray, num_states: int, start: int, utt: str) -> np.ndarray:
    """Longest arc count from `start` to each state (Kahn's algorithm): a state's incoming arcs
    all leave states of lower levels, so a level is relaxed in one vectorised step."""
    indegree = np.bincount(dst, minlength=num_states)
    order = np.argsort(src, kind="stable")
    first = np.searchsorted(src[order], np.arange(num_states + 1)).tolist()
    out_dst = dst[order].tolist()
    level = np.zeros(num_states, np.int64)
    remaining = indegree.tolist()
    frontier = [s for s in range(num_states) if remaining[s] == 0]  # the start (and unreachable states)
    if start not in frontier:
        raise AsrKdError(f"utterance {utt}: the lattice's start state has incoming arcs (not a decoder lattice)")
    depth, seen = 0, 0
    while frontier:
        seen += len(frontier)
        level[frontier] = depth
        nxt = []
        for s in frontier:
            for d in out_dst[first[s]:first[s + 1]]:
                remaining[d] -= 1
                if remaining[d] == 0:
                    nxt.append(d)
        frontier, depth = nxt, depth + 1
    if seen < num_states:
        raise AsrKdError(f"utterance {utt}: the lattice has a cycle (not a decoder lattice)")
    return level


def best_paths(lat: WordLattice, scales: Sequence[float], penalties: Sequence[float]) -> list[list[int]]:
    """Word ids of the best path at each (scales[k], penalties[k]) point: minimum over paths of
    graph + scale * acoustic + penalty * (words on the path), one Viterbi pass for all points."""
    scale, penalty = np.asarray(scales, np.float64), np.asarray(penalties, np.float64)
    cost = np.full((lat.num_states, len(scale)), INF)
    cost[lat.start] = 0.0
    back = np.full((lat.num_states, len(scale)), -1, np.int64)   # best incoming arc per state and point
    arc_cost = (lat.graph[:, None] + lat.acoustic[:, None] * scale
                + (lat.words != 0)[:, None].astype(np.float64) * penalty)
    arc_ids = np.arange(lat.num_arcs)[:, None]
    run_of_arc = np.repeat(np.arange(len(lat.segments) - 1), np.diff(lat.segments))
    no_arc = np.iinfo(np.int64).max
    for level in range(len(lat.level_starts) - 1):
        lo, hi = lat.level_starts[level], lat.level_starts[level + 1]
        if lo == hi:
            continue
        runs = lat.segments[lat.level_segments[level]:lat.level_segments[level + 1]]
        cand = cost[lat.src[lo:hi]] + arc_cost[lo:hi]
        best = np.minimum.reduceat(cand, runs - lo, axis=0)
        winner = np.where(cand == best[run_of_arc[lo:hi] - run_of_arc[lo]], arc_ids[lo:hi], no_arc)
        ends = lat.dst[runs]
        cost[ends] = best
        back[ends] = np.minimum.reduceat(winner, runs - lo, axis=0)
    total = cost[lat.final_states] + lat.final_graph[:, None] + lat.final_acoustic[:, None] * scale
    state = lat.final_states[np.argmin(total, axis=0)]
    columns = np.arange(len(scale))
    labels = []
    while True:
        arc = back[state, columns]
        if (arc < 0).all():
            break
        labels.append(np.where(arc >= 0, lat.words[np.maximum(arc, 0)], 0))
        state = np.where(arc >= 0, lat.src[np.maximum(arc, 0)], state)
    path = np.array(labels[::-1], np.int64).reshape(len(labels), len(scale))
    return [[int(w) for w in path[:, k] if w] for k in range(len(scale))]


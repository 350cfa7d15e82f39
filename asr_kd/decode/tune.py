"""Choose the LM weight and word insertion penalty on a dev set, then decode test with them fixed.

As Kaldi's score.sh: dev is decoded ONCE into lattices (within the lattice beam), and each (LM
weight, word penalty) of a wide grid is scored by the lattices' best path at that point
(lattice.best_paths), instead of one decode per point. LM weight = 1 / acoustic scale (LM weights
5..50 = acoustic scales 0.2..0.02); penalties 0, 0.5, 1 as Kaldi's scoring.

A lattice holds the paths the search kept at the scale it was decoded with, so points far from that
scale can miss their best path (a path with much better acoustics and more words, or the reverse).
Kaldi decodes at 0.1 and scores LM weights 7..17, about x1.4 either side; a 5..50 grid is x10 wide,
so the lattices are decoded at its geometric middle (1 / sqrt(5 * 50) = 0.063: at most x3.2 either
side) unless `lattice_acoustic_scale` is given.

Kaldi's best_wer.sh picks the LM weight on the set it reports, which flatters the numbers; here
test is decoded once into lattices the same way as dev and scored at the dev-best point only. Test
is measured exactly as the point was chosen: on AN4 tri1 a fresh decode of test at a high LM weight
chosen on lattices fared worse than the lattices predicted (a fresh decode at a small acoustic scale
searches a far wider acoustic beam than the lattice kept, and finds LM-driven errors), and a lattice
decode at the middle scale is also cheaper than a fresh decode at a small one. A best point on the
grid's edge is warned about: the optimum may lie outside the grid.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from asr_kd.data.feature_view import open_feats
from asr_kd.decode.decoder import Decoder, DecodeJob, DecodeStats, collect, load_scores
from asr_kd.decode.lattice import best_paths
from asr_kd.decode.scoring import WerResult, wer
from asr_kd.errors import AsrKdError
from asr_kd.parallel import Jobs, run_shards, split

log = logging.getLogger(__name__)

DEFAULT_LM_WEIGHTS = tuple(float(w) for w in range(5, 51))   # acoustic scales 0.2 .. 0.02
DEFAULT_PENALTIES = (0.0, 0.5, 1.0)

Point = tuple[float, float]  # (LM weight, word penalty)


@dataclass
class TunedDecode:
    lm_weight: float
    word_penalty: float
    dev_wer: dict[Point, WerResult]                 # (LM weight, word penalty) -> dev result
    hyps: dict[str, list[str]]                      # test hypotheses: its lattices' best path at the point
    stats: DecodeStats                              # the test lattice decode
    dev_stats: DecodeStats                          # the dev lattice decode (grid scoring included)
    lattice_acoustic_scale: float                   # the scale the dev lattices were decoded with
    edges: list[str] = field(default_factory=list)  # grid edges the chosen point lies on

    @property
    def acoustic_scale(self) -> float:
        return 1.0 / self.lm_weight


def tune_and_decode(dev_job: DecodeJob, dev_refs: Mapping[str, list[str]], test_job: DecodeJob,
                    lm_weights: Sequence[float] = DEFAULT_LM_WEIGHTS, penalties: Sequence[float] = DEFAULT_PENALTIES,
                    jobs: Jobs = Jobs(), lattice_acoustic_scale: float | None = None) -> TunedDecode:
    """Score the (LM weight x penalty) grid on dev lattices, choose (choose_point), score test lattices there."""
    grid = grid_points(lm_weights, penalties)
    lattice_acoustic_scale = lattice_acoustic_scale or middle_scale(lm_weights)
    dev, dev_stats = lattice_grid_store(dev_job, grid, jobs, lattice_acoustic_scale)
    dev_wer = {point: wer(dict(dev_refs), dev[point]) for point in grid}
    for (weight, penalty), result in dev_wer.items():
        log.debug("dev LM weight %g, word penalty %g: %s", weight, penalty, result)
    weight, penalty = choose_point({p: r.errors for p, r in dev_wer.items()})
    edges = grid_edges((weight, penalty), lm_weights, penalties)
    log.info("chosen LM weight %g (acoustic scale %.4g), word penalty %g: dev %s", weight, 1 / weight, penalty,
             dev_wer[(weight, penalty)])
    if edges:
        log.warning("the dev-best point is on the grid's edge (%s): the best setting may lie outside the grid; "
                    "widen --lm-weights/--word-penalties", ", ".join(edges))
    test, stats = lattice_grid_store(test_job, [(weight, penalty)], jobs, lattice_acoustic_scale)
    hyps = test[(weight, penalty)]
    return TunedDecode(weight, penalty, dev_wer, hyps, stats, dev_stats, lattice_acoustic_scale, edges)


def middle_scale(lm_weights: Sequence[float]) -> float:
    """The acoustic scale at the geometric middle of the LM-weight grid (the lattices' decoding scale)."""
    return 1.0 / math.sqrt(min(lm_weights) * max(lm_weights))


def grid_points(lm_weights: Sequence[float], penalties: Sequence[float]) -> list[Point]:
    """Every (LM weight, penalty) pair, penalties outer; LM weights must be positive."""
    bad = [w for w in lm_weights if not w > 0]
    if bad or not lm_weights or not penalties:
        raise AsrKdError(f"LM weights must be positive numbers and the grid non-empty (got {list(lm_weights)}, "
                         f"penalties {list(penalties)})")
    return [(float(w), float(p)) for p in dict.fromkeys(penalties) for w in sorted(set(lm_weights))]


def choose_point(errors: Mapping[Point, int]) -> Point:
    """The point with the fewest dev errors. Ties (frequent on a small dev set and a fine grid) go to
    the point whose two LM-weight neighbours at the same penalty have the fewest errors together
    (the middle of a flat minimum rather than its rim; a neighbour outside the grid counts as
    worst), then to the smaller penalty, then to the larger LM weight (smaller acoustic scale)."""
    weights = sorted({w for w, _ in errors})

    def neighbours(point: Point) -> float:
        i = weights.index(point[0])
        near = [weights[j] if 0 <= j < len(weights) else None for j in (i - 1, i + 1)]
        return sum(math.inf if w is None else errors.get((w, point[1]), math.inf) for w in near)

    return min(errors, key=lambda p: (errors[p], neighbours(p), p[1], -p[0]))


def grid_edges(point: Point, lm_weights: Sequence[float], penalties: Sequence[float]) -> list[str]:
    """Which edges of the grid `point` lies on (an axis with one value has no edge)."""
    edges = []
    for name, value, axis in (("LM weight", point[0], lm_weights), ("word penalty", point[1], penalties)):
        if len(set(axis)) > 1 and value in (min(axis), max(axis)):
            edges.append(f"{name} {value:g} is the {'lowest' if value == min(axis) else 'highest'} tried")
    return edges


# ---------------------------------------------------------------- dev lattices, sharded over jobs

def lattice_grid_store(job: DecodeJob, grid: Sequence[Point], jobs: Jobs = Jobs(),
                       lattice_acoustic_scale: float | None = None,
                       ) -> tuple[dict[Point, dict[str, list[str]]], DecodeStats]:
    """Decode every utterance of `job.source` into a lattice once (at `lattice_acoustic_scale`, default
    the grid's middle_scale) and read its best path at every grid point; sharded over `jobs` (results
    do not depend on nj: each utterance is decoded alone)."""
    lattice_acoustic_scale = lattice_acoustic_scale or middle_scale([w for w, _ in grid])
    utts = sorted(open_feats(job.source).keys)
    if not utts:
        raise AsrKdError(f"{job.source}: no utterances to decode")
    grid = list(grid)
    per_shard = run_shards(lattice_grid_shard, split(utts, jobs.nj), jobs, job, grid, lattice_acoustic_scale,
                           desc=f"lattices {job.source}")
    results = [r for shard in per_shard for r in shard]
    hyps = {point: {utt: words[k] for utt, words, *_ in results} for k, point in enumerate(grid)}
    _, stats = collect([(utt, [], ok, frames, seconds) for utt, _, ok, frames, seconds in results],
                       lattice_acoustic_scale)
    return hyps, stats


def lattice_grid_shard(utts: list[str], job: DecodeJob, grid: list[Point], lattice_acoustic_scale: float) -> list:
    """One job's share: [(utt, [words at each grid point], reached final, frames, seconds)] in `utts` order."""
    decoder = Decoder(job.graph_dir, job.model_path, beam=job.beam, lattice_beam=job.lattice_beam,
                      max_active=job.max_active)
    matrices = load_scores(job, utts, decoder.am)
    scales, penalties = [1.0 / w for w, _ in grid], [p for _, p in grid]
    out = []
    for utt in utts:
        start = time.perf_counter()
        lattice = decoder.lattice(utt, matrices[utt], lattice_acoustic_scale)
        paths = best_paths(lattice, scales, penalties)
        out.append((utt, [[decoder.id2word[i] for i in path] for path in paths], lattice.reached_final,
                    len(matrices[utt]), time.perf_counter() - start))
    return out

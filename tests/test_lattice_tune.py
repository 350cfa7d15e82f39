"""Dev lattices rescored over an (LM weight, word penalty) grid: the lattice's best path at a grid point
is the path a fresh decode at that point finds (tiny graph of test_graph_decode, wide beams)."""
import dataclasses
import json

import numpy as np
import pytest

from asr_kd.errors import AsrKdError
from tests.test_graph_decode import (SEQS, loglikes_job, synthetic_loglikes, system,  # noqa: F401  (fixture)
                                     tuned_decode_args)

# (acoustic scale, word penalty): wide enough that the best word sequence changes along the grid
POINTS = [(1.0, 0.0), (0.5, 0.0), (0.2, 0.0), (0.1, 0.0), (0.05, 0.0), (0.2, 2.0), (0.1, 5.0), (1.0, 8.0)]


def noisy_loglikes(system, seed: int) -> dict[str, np.ndarray]:
    """SEQS' matrices with the right pdf only mildly favoured and noise on every cell, so acoustics,
    LM and word penalty disagree and the best path moves along the grid."""
    root, num_pdfs, pdf_of = system
    rng = np.random.default_rng(seed)
    out = {}
    for i, seq in enumerate(SEQS):
        clean = synthetic_loglikes(root, num_pdfs, pdf_of, seq)
        out[f"u{i}"] = (0.15 * clean + rng.normal(0.0, 1.0, clean.shape)).astype(np.float32)
    return out


def test_lattice_grid_equals_fresh_decodes(system):
    from asr_kd.decode.decoder import Decoder
    from asr_kd.decode.lattice import best_paths

    root = system[0]
    graph, model = root / "graph", root / "mono/final.mdl"
    wide = {"beam": 40.0, "lattice_beam": 40.0, "max_active": 100000}
    lattice_decoder = Decoder(graph, model, **wide)
    fresh = {p: Decoder(graph, model, word_penalty=p, **wide) for p in sorted({p for _, p in POINTS})}
    distinct = set()
    for seed in (1, 2):
        for utt, matrix in noisy_loglikes(system, seed).items():
            lattice = lattice_decoder.lattice(utt, matrix, acoustic_scale=0.3)  # decoded once, at its own scale
            paths = best_paths(lattice, [s for s, _ in POINTS], [p for _, p in POINTS])
            for (scale, penalty), path in zip(POINTS, paths):
                words = [lattice_decoder.id2word[i] for i in path]
                assert words == fresh[penalty].decode_one(utt, matrix, scale)[0], (utt, seed, scale, penalty)
                distinct.add((utt, seed, tuple(words)))
    assert len(distinct) > 2 * len(SEQS) + 5  # the grid really moved the best path (not one answer everywhere)


def test_lattice_weights_are_unscaled(system):
    """Lattices of one utterance decoded at two scales score the grid the same way (acoustic costs are
    stored unscaled, so the decoding scale does not leak into the grid)."""
    from asr_kd.decode.decoder import Decoder
    from asr_kd.decode.lattice import best_paths

    root = system[0]
    decoder = Decoder(root / "graph", root / "mono/final.mdl", beam=40.0, lattice_beam=40.0)
    matrix = noisy_loglikes(system, 3)["u3"]
    a, b = (decoder.lattice("u3", matrix, s) for s in (0.1, 0.7))
    scales, penalties = [s for s, _ in POINTS], [p for _, p in POINTS]
    paths = best_paths(a, scales, penalties)
    assert paths == best_paths(b, scales, penalties) and len({tuple(p) for p in paths}) > 1


def test_choose_point_prefers_the_middle_of_a_flat_minimum():
    from asr_kd.decode.tune import choose_point

    errors = {(w, 0.0): e for w, e in zip((5.0, 6.0, 7.0, 8.0, 9.0), (9, 3, 3, 3, 8))}
    errors.update({(w, 1.0): e for w, e in zip((5.0, 6.0, 7.0, 8.0, 9.0), (9, 9, 4, 9, 9))})
    assert choose_point(errors) == (7.0, 0.0)           # 3 errors with neighbours 3 + 3
    assert choose_point({(5.0, 0.0): 2, (6.0, 0.0): 2}) == (6.0, 0.0)  # full tie: the larger LM weight


def test_grid_edges():
    from asr_kd.decode.tune import grid_edges

    weights, penalties = [5.0, 10.0, 50.0], [0.0, 0.5, 1.0]
    assert grid_edges((10.0, 0.5), weights, penalties) == []
    assert grid_edges((50.0, 0.0), weights, penalties) == ["LM weight 50 is the highest tried",
                                                           "word penalty 0 is the lowest tried"]
    assert grid_edges((5.0, 0.0), weights, [0.0]) == ["LM weight 5 is the lowest tried"]  # one penalty: no edge


def test_lattice_grid_same_for_any_nj_and_names_a_bad_utterance(system, tmp_path):
    from asr_kd.decode.tune import lattice_grid_store
    from asr_kd.parallel import Jobs

    job, _ = loglikes_job(system, tmp_path)
    job = dataclasses.replace(job, beam=500.0, lattice_beam=500.0)  # keep the penalised path in the lattice
    grid = [(1.0, 0.0), (10.0, 0.0), (10.0, 200.0)]
    one, stats = lattice_grid_store(job, grid, Jobs(nj=1), 0.5)
    two, _ = lattice_grid_store(job, grid, Jobs(nj=2), 0.5)
    assert one == two and stats.num_utts == len(SEQS)
    assert one[(1.0, 0.0)]["u0"] == ["A", "B"] and len(one[(10.0, 200.0)]["u0"]) < 2
    job, _ = loglikes_job(system, tmp_path / "bad", corrupt="u3")
    with pytest.raises(AsrKdError, match="utterance u3: log-likelihoods contain NaN"):
        lattice_grid_store(job, grid, Jobs(nj=2), 0.5)


def test_lattice_grid_on_a_dask_local_cluster(system, tmp_path):
    distributed = pytest.importorskip("distributed")
    from asr_kd.decode.tune import lattice_grid_store
    from asr_kd.parallel import Jobs

    job, _ = loglikes_job(system, tmp_path)
    grid = [(1.0, 0.0), (10.0, 200.0)]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        on_dask = lattice_grid_store(job, grid, Jobs(nj=3, dask_scheduler=cluster.scheduler_address), 0.5)[0]
    assert on_dask == lattice_grid_store(job, grid, Jobs(nj=1), 0.5)[0]


def test_decode_cli_warns_on_the_grid_edge(system, tmp_path, capsys):
    from asr_kd.cli import main

    args, out = tuned_decode_args(system, tmp_path), tmp_path / "decode"
    assert main(args + ["--lm-weights", "1:3", "--word-penalties", "0,0.5"]) == 0
    tuning = json.loads((out / "tuning.json").read_text())
    assert [r["lm_weight"] for r in tuning["dev"]] == [1.0, 2.0, 3.0] * 2
    # every point is error-free: the tie goes to the middle LM weight, the lowest penalty (an edge)
    assert (tuning["chosen_lm_weight"], tuning["chosen_word_penalty"]) == (2.0, 0.0)
    assert tuning["on_grid_edge"] == ["word penalty 0 is the lowest tried"]
    assert tuning["lattice_acoustic_scale"] == pytest.approx(1 / 3 ** 0.5)  # the grid's geometric middle
    assert "grid's edge: word penalty 0 is the lowest tried" in capsys.readouterr().out
    assert json.loads((out / "wer.json").read_text())["errors"] == 0
    assert main(args + ["--lm-weights", "3:1"]) == 1
    assert "--lm-weights FIRST:LAST needs 0 < FIRST <= LAST" in capsys.readouterr().err

"""Specialists (paper §5): dustbin mapping, the KL combination, clustering, and a tiny train/eval run."""
import json
import math

import numpy as np
import pytest
import torch

from asr_kd.cli import main
from asr_kd.distill.specialist_runs import init_from_generalist, sample_frames
from asr_kd.distill.specialists import (active_specialists, cluster_matrix, cluster_pdfs, combination_objective,
                                        combine, coverage, dustbin_labels, dustbin_probs, kmeans)
from asr_kd.errors import AsrKdError
from asr_kd.nnet.models import ModelConfig, ModelSpec, init_model, save_final

from nnet_synth import make_sets


def random_probs(b, c, seed):
    return torch.softmax(torch.randn(b, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), 1)


# ---------------------------------------------------------------- dustbin --------------------
def test_dustbin_labels_map_cluster_pdfs_to_their_index_and_the_rest_to_the_dustbin():
    labels = torch.tensor([0, 3, 1, 2, -1, 4])
    assert dustbin_labels(labels, [3, 1], num_pdfs=5).tolist() == [2, 0, 1, 2, -1, 2]


def test_dustbin_probs_keep_cluster_pdfs_in_order_and_sum_the_rest():
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    assert torch.allclose(dustbin_probs(p, [2, 0]), torch.tensor([[0.3, 0.1, 0.6]], dtype=torch.float64))


# ---------------------------------------------------------------- combination ----------------
def test_combination_is_the_generalist_where_no_specialist_is_active():
    p_g = random_probs(6, 5, 0)
    clusters = [[0, 1], [2, 3]]
    spec = [random_probs(6, 3, 1), random_probs(6, 3, 2)]
    active = torch.zeros(6, 2, dtype=torch.bool)
    active[3, 0] = True  # one frame has an active specialist: the others must stay exactly p_g
    q = combine(p_g, spec, clusters, active)
    idle = torch.tensor([0, 1, 2, 4, 5])
    assert torch.equal(q[idle], p_g[idle])
    assert not torch.allclose(q[3], p_g[3])


def test_two_specialists_whose_dustbins_are_single_pdfs_give_the_mean_distribution():
    # each specialist then predicts a full distribution over the 3 pdfs, and the q minimising a sum
    # of KL(p_i || q) is the arithmetic mean of the p_i
    p_g = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    p_a = torch.tensor([[0.2, 0.2, 0.6]], dtype=torch.float64)  # pdfs 0, 1 + dustbin {2}
    p_b = torch.tensor([[0.1, 0.7, 0.2]], dtype=torch.float64)  # pdfs 1, 2 + dustbin {0}
    q = combine(p_g, [p_a, p_b], [[0, 1], [1, 2]], torch.ones(1, 2, dtype=torch.bool), iters=2000, tol=1e-13)
    expected = (p_g + torch.tensor([[0.2, 0.2, 0.6]]) + torch.tensor([[0.2, 0.1, 0.7]])) / 3
    assert torch.allclose(q, expected.double(), atol=1e-9)


def test_combination_with_coarse_dustbins_reaches_the_minimum_found_by_gradient_descent():
    c, b = 6, 4
    p_g = random_probs(b, c, 3)
    clusters = [[0, 1], [1, 2, 3]]
    spec = [random_probs(b, 3, 4), random_probs(b, 4, 5)]
    active = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    q = combine(p_g, spec, clusters, active, iters=3000, tol=1e-12)
    assert torch.allclose(q.sum(1), torch.ones(b, dtype=torch.float64))
    logits = torch.zeros(b, c, dtype=torch.float64, requires_grad=True)  # independent oracle: L-BFGS on log q
    opt = torch.optim.LBFGS([logits], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = combination_objective(torch.softmax(logits, 1), p_g, spec, clusters, active).sum()
        value.backward()
        return value

    opt.step(closure)
    oracle = torch.softmax(logits.detach(), 1)
    ours = combination_objective(q, p_g, spec, clusters, active)
    theirs = combination_objective(oracle, p_g, spec, clusters, active)
    assert (ours <= theirs + 1e-9).all()
    assert torch.allclose(q, oracle, atol=1e-4)
    assert (ours < combination_objective(p_g, p_g, spec, clusters, active)).all()


def test_each_em_step_lowers_the_objective():
    p_g = random_probs(3, 8, 6)
    clusters = [[0, 1, 2], [2, 5]]
    spec = [random_probs(3, 4, 7), random_probs(3, 3, 8)]
    active = torch.ones(3, 2, dtype=torch.bool)
    values = [combination_objective(combine(p_g, spec, clusters, active, iters=n, tol=0), p_g, spec, clusters, active)
              for n in range(1, 8)]
    for before, after in zip(values, values[1:]):
        assert (after <= before + 1e-12).all()
    assert (values[-1] < values[0]).all()


def test_active_specialists_are_those_holding_the_generalists_top_pdfs():
    p_g = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    member = cluster_matrix([[0], [1, 2], [3]], 4)
    assert active_specialists(p_g, member, 1).tolist() == [[True, False, False], [False, False, True]]
    assert active_specialists(p_g, member, 2).tolist() == [[True, True, False], [False, True, True]]


def test_combine_refuses_mismatched_inputs():
    with pytest.raises(AsrKdError, match="2 clusters, 1 specialist outputs"):
        combine(random_probs(2, 4, 0), [random_probs(2, 2, 1)], [[0], [1]], torch.ones(2, 2, dtype=torch.bool))


# ---------------------------------------------------------------- clustering -----------------
def grouped_predictions(seed=0, frames=2000):
    """Predictions whose mass moves within pdf groups {0,1,2}, {3,4}, {5,6,7}: confusable groups."""
    rng = np.random.default_rng(seed)
    groups = [[0, 1, 2], [3, 4], [5, 6, 7]]
    probs = np.full((frames, 8), 1e-3)
    for i in range(frames):
        g = groups[rng.integers(3)]
        probs[i, g] += rng.dirichlet(np.ones(len(g)))
    return probs / probs.sum(1, keepdims=True)


def test_clusters_of_covarying_pdfs_are_found():
    clusters = cluster_pdfs(grouped_predictions(), 3, seed=0)
    assert sorted(clusters) == [[0, 1, 2], [3, 4], [5, 6, 7]]
    assert coverage(clusters, 8).tolist() == [1] * 8


def test_clustering_is_deterministic_for_a_seed():
    probs = np.random.default_rng(1).dirichlet(np.ones(30), size=500)
    runs = [cluster_pdfs(probs, 5, seed=7, overlap=0.05) for _ in range(2)]
    assert runs[0] == runs[1]
    a, b = kmeans(probs.T, 5, seed=7), kmeans(probs.T, 5, seed=7)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])


def test_overlap_lets_a_pdf_join_several_clusters():
    probs = np.random.default_rng(2).dirichlet(np.ones(30), size=500)
    plain, wide = cluster_pdfs(probs, 5, seed=0), cluster_pdfs(probs, 5, seed=0, overlap=0.5)
    assert coverage(plain, 30).tolist() == [1] * 30
    assert coverage(wide, 30).max() > 1
    assert all(set(p) <= set(w) for p, w in zip(plain, wide))


def test_kmeans_keeps_every_cluster_in_use():
    points = np.array([[0.0], [0.0], [0.0], [10.0]])  # k = 3 but only two distinct points
    _, assign = kmeans(points, 3, seed=0)
    assert sorted(set(assign.tolist())) == [0, 1, 2]


# ---------------------------------------------------------------- one specialist -------------
def test_sample_is_half_cluster_half_rest_with_the_dustbin_correction():
    labels = torch.tensor([0] * 10 + [1] * 90)
    frames, offset = sample_frames(labels, [0], max_frames=100, seed=0)
    chosen = labels[frames]
    assert (chosen == 0).sum() == 10 and (chosen == 1).sum() == 10
    assert offset == pytest.approx(math.log((10 / 10) / (10 / 90)))  # the rest was sampled at 1/9


def test_a_fresh_specialist_predicts_what_the_generalist_does():
    spec = ModelSpec(ModelConfig(hidden_layers=1, hidden_dim=64), 3, 0, 0, 6)
    generalist = init_model(spec, 0)
    x = torch.randn(512, 3, generator=torch.Generator().manual_seed(0))
    pdfs = [4, 1]
    specialist, s_spec = init_from_generalist(generalist, spec, pdfs, x, dustbin_offset=0.7)
    assert s_spec.num_pdfs == 3
    z_g, z_s = generalist(x), specialist(x)
    assert torch.allclose(z_s[:, :2], z_g[:, pdfs], atol=1e-5)  # the cluster's rows are copied
    p_s = torch.softmax(z_s + torch.tensor([0.0, 0.0, 0.7]), 1)  # with the dustbin correction added back
    assert (p_s - dustbin_probs(torch.softmax(z_g, 1), pdfs)).abs().max() < 0.05


# ---------------------------------------------------------------- end to end -----------------
def specialist_args(root, sets, *extra):
    (tf, ta), (df, da) = sets["train"], sets["dev"]
    return ["train-specialists", str(root / "gen"), str(tf), str(ta), str(df), str(da), str(root / "spec"),
            "--set", "num_clusters=3", "--set", "max_pdfs=8", "--set", "min_frames=1", "--set", "cluster_frames=500",
            "--set", "train.max_epochs=1", "--set", "train.device=cpu", *extra]


@pytest.fixture(scope="module")
def spec_run(tmp_path_factory):
    """A generalist, its specialists and the table, on synthetic stores (8 pdfs)."""
    root = tmp_path_factory.mktemp("spec")
    sets = {name: make_sets(root, num_utts=n, num_pdfs=8, dim=4, seed=s, noise=1.5, name=name)
            for name, n, s in (("train", 40, 0), ("dev", 8, 1))}
    (tf, ta), (df, da) = sets["train"], sets["dev"]
    assert main(["train", str(tf), str(ta), str(df), str(da), str(root / "gen"), "--set", "max_epochs=2",
                 "--set", "model.hidden_dim=16", "--set", "left_context=1", "--set", "right_context=1",
                 "--set", "device=cpu"]) == 0
    spec = ModelSpec(ModelConfig(hidden_layers=1, hidden_dim=8), 4, 1, 1, 8)
    save_final(root / "other_gen" / "final.pt", init_model(spec, 5).state_dict(), spec)  # another predictor
    assert main(specialist_args(root, sets)) == 0
    assert main(["eval-specialists", str(root / "spec"), "--eval", "dev", str(df), str(da)]) == 0
    return root, sets


def test_train_and_eval_specialists_end_to_end(spec_run, capsys):
    root, sets = spec_run
    index = json.loads((root / "spec" / "specialists.json").read_text())
    clusters = json.loads((root / "spec" / "clusters.json").read_text())
    assert sorted({p for c in clusters["clusters"] for p in c}) == list(range(8))  # every pdf is in a cluster
    assert index["specialists"] == [f"spec_{m:02d}" for m in clusters["specialists"]] and index["specialists"]
    first = root / "spec" / index["specialists"][0]
    record = json.loads((first / "specialist.json").read_text())
    assert record["train_frames"] > 0 and record["pdfs"] == clusters["clusters"][record["cluster"]]
    mtime = (first / "final.pt").stat().st_mtime_ns
    assert main(specialist_args(root, sets)) == 0  # rerun: finished specialists are kept, not retrained
    assert main(specialist_args(root, sets, "--set", "top_n=2")) == 0  # an evaluation setting: not refused
    assert (first / "final.pt").stat().st_mtime_ns == mtime
    capsys.readouterr()
    assert main(specialist_args(root, sets, "--set", "num_clusters=4")) == 1
    assert "made with another config" in capsys.readouterr().err
    assert main(specialist_args(root, sets, "--cluster-with", str(root / "other_gen"))) == 1
    assert "clustering model" in capsys.readouterr().err

    table = json.loads((root / "spec" / "specialist_table.json").read_text())
    dev = table["sets"]["dev"]
    assert dev["overall"]["frames"] == sum(r["frames"] for r in dev["by_covering"].values())
    assert dev["overall"]["delta_correct"] == dev["overall"]["combined_correct"] - dev["overall"]["generalist_correct"]
    assert "| # specialists covering |" in (root / "spec" / "specialist_table.md").read_text()


def test_report_picks_up_the_specialist_table(spec_run):
    from asr_kd.report.report import write_report

    root, _ = spec_run
    text = write_report([root], root / "report", plots=False).read_text()
    assert "## Specialist models (paper §5" in text
    assert "| all frames |" in text
    results = json.loads((root / "report" / "results.json").read_text())
    assert list(results["specialists"]) == [str(root / "spec" / "specialist_table.json")]


def test_combined_loglikes_store_holds_each_utterances_frames(spec_run):
    from asr_kd.data.store import RaggedStore
    from asr_kd.distill.specialist_runs import combined_posteriors, load_specialists, write_combined_loglikes
    from asr_kd.nnet.frames import FrameData

    root, sets = spec_run
    dev = FrameData.load(*sets["dev"])
    priors = np.load(sets["train"][1] / "priors.npy")
    store = RaggedStore(write_combined_loglikes(root / "spec", dev, root / "ll_dev", priors, batch=7))
    assert store.keys == dev.utt_ids and store.meta["kind"] == "loglike"
    generalist, specialists, _ = load_specialists(root / "spec")
    _, q, _ = combined_posteriors(generalist, specialists, dev, torch.arange(dev.num_frames))
    expected = (q.log() - torch.from_numpy(np.log(priors))).float().numpy()
    u = len(dev.utt_ids) // 2
    first, last = int(dev.offsets[u]), int(dev.offsets[u + 1])
    assert np.allclose(store[dev.utt_ids[u]], expected[first:last], atol=1e-4)


def test_within_cluster_errors_counts_errors_inside_one_cluster():
    from asr_kd.distill.specialist_runs import within_cluster_errors

    probs = np.eye(4)[[0, 1, 2, 3]]  # predictions 0, 1, 2, 3
    labels = np.array([1, 1, 3, 0])  # errors: 0 for 1 (same cluster), 2 for 3 (same), 3 for 0 (not)
    assert within_cluster_errors(probs, labels, [[0, 1], [2, 3]]) == round(2 / 3, 4)


def test_clusters_can_come_from_another_model(spec_run):
    root, sets = spec_run
    args = specialist_args(root, sets, "--cluster-with", str(root / "other_gen"))
    args[6] = str(root / "spec_other")
    assert main(args) == 0
    record = json.loads((root / "spec_other" / "clusters.json").read_text())
    assert record["clustered_with"] == [str(root / "other_gen" / "final.pt")]
    assert record["clustered_with_sha256"] != record["generalist_sha256"]

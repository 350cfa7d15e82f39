"""Decision-tree clustering on synthetic statistics, and the tree's Kaldi serialisation."""
import numpy as np

from asr_kd.align import tree as T
from asr_kd.kaldi import gmm

SIL, A, B, C = 1, 2, 3, 4


def synthetic_stats(seed=0) -> T.TreeStats:
    """Phones A, B, C (3 pdf classes) in all contexts; only A's class 0 depends on context:
    after B its mean shifts by +5, so that is the one split worth making."""
    rng = np.random.default_rng(seed)
    events, count, sums, sumsq = [], [], [], []
    for left in (0, SIL, A, B, C):
        for right in (0, SIL, B, C):
            for center in (A, B, C):
                for cls in (0, 1, 2):
                    mean = np.full(2, float(center)) + (5.0 if (center, cls, left) == (A, 0, B) else 0.0)
                    x = mean + rng.normal(size=(200, 2))
                    events.append((left, center, right, cls))
                    count.append(len(x)), sums.append(x.sum(0)), sumsq.append((x * x).sum(0))
    return T.TreeStats(np.array(events), np.array(count, float), np.array(sums), np.array(sumsq))


def test_tree_finds_the_context_split_and_loads_into_kaldi():
    stats = synthetic_stats()
    questions = T.phone_questions(stats, [SIL, A, B, C], silence=[SIL])
    assert frozenset([B]) in questions and frozenset([0, SIL]) in questions
    roots = [(SIL, c) for c in range(5)] + [(p, c) for p in (A, B, C) for c in range(3)]
    tree_map, num_pdfs, _, _ = T.build_tree(stats, questions, num_leaves=15, roots=roots)
    assert num_pdfs == 15          # 14 roots (5 for SIL without data) + the one split
    tree = gmm.tree_from_bytes(T.context_dependency_bytes(tree_map))
    assert (tree.num_pdfs, tree.context_width, tree.central_position) == (15, 3, 1)
    after_b = tree.compute([B, A, C], 0)[1]
    others = {tree.compute([left, A, right], 0)[1] for left in (0, SIL, A, C) for right in (0, B, C)}
    assert len(others) == 1 and after_b not in others
    assert len({tree.compute([left, A, C], 1)[1] for left in (0, SIL, A, B, C)}) == 1


def test_min_count_blocks_splits_and_file_roundtrip(tmp_path):
    stats = synthetic_stats()
    questions = T.phone_questions(stats, [SIL, A, B, C], silence=[SIL])
    _, num_pdfs, _, _ = T.build_tree(stats, questions, num_leaves=100, min_count=1e9)
    assert num_pdfs == 9           # no split leaves 1e9 frames on both sides: one leaf per root
    tree_map, num_pdfs, _, _ = T.build_tree(stats, questions, num_leaves=30)
    tree = gmm.tree_from_bytes(T.context_dependency_bytes(tree_map))
    gmm.write_tree(tmp_path / "tree", tree)
    loaded = gmm.read_tree(tmp_path / "tree")
    assert (tmp_path / "tree").read_bytes().startswith(b"\0BContextDependency ")
    for ctx in ([B, A, C], [0, B, SIL], [C, C, 0]):
        for cls in range(3):
            assert loaded.compute(ctx, cls) == tree.compute(ctx, cls)
    assert loaded.num_pdfs == num_pdfs


def test_gauss_loglike_matches_direct_computation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3)) * [1.0, 2.0, 0.5]
    mean, var = x.mean(0), x.var(0)
    direct = (-0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)).sum()
    assert np.isclose(T.gauss_loglike(len(x), x.sum(0), (x * x).sum(0)), direct)

"""Triphone training from a monophone alignment: tree, convert-ali, EM, alignment store."""
import numpy as np
import pytest

from align_synth import boundary_errors, hyp_segments, make_corpus, make_lang
from asr_kd.align.alignment import align_data
from asr_kd.align.mono import MonoConfig, train_mono
from asr_kd.align.tri import TriConfig, convert_alignment, train_tri, transition_store
from asr_kd.kaldi import gmm

TRI = TriConfig(num_leaves=30, tot_gauss=60, num_iters=6, max_iter_inc=4, realign_iters=[3], min_leaf_count=20)


@pytest.fixture(scope="module")
def tri(tmp_path_factory):
    root = tmp_path_factory.mktemp("tri")
    lang = make_lang(root)
    feats, texts, truth = make_corpus(root, num_utts=60)
    train_mono(feats, texts, lang, root / "mono", MonoConfig(num_iters=10, max_iter_inc=6, tot_gauss=20,
                                                             realign_iters=[1, 2, 3, 4, 5, 6, 8]))
    align_data(feats, texts, lang, root / "mono", root / "mono_ali")
    train_tri(feats, texts, lang, root / "mono_ali", root / "tri1", TRI)
    store = align_data(feats, texts, lang, root / "tri1", root / "tri1_ali")
    return root, truth, store


def test_tri_tree_size_and_store_meta(tri):
    root, _, store = tri
    tree = gmm.read_tree(root / "tri1" / "tree")
    assert (tree.context_width, tree.central_position) == (3, 1)
    assert 20 < tree.num_pdfs <= TRI.num_leaves
    assert store.meta["num_pdfs"] == tree.num_pdfs
    assert int(np.asarray(store.data).max()) < tree.num_pdfs
    assert np.load(root / "tri1_ali" / "priors.npy").shape == (tree.num_pdfs,)


def test_tri_alignment_keeps_known_boundaries(tri):
    root, truth, _ = tri
    errors = boundary_errors(truth, hyp_segments(root / "tri1_ali" / "ctm.txt"))
    assert errors.max() <= 2 and errors.mean() < 1.0


def test_convert_alignment_keeps_phones_states_and_lengths(tri):
    root, _, _ = tri
    old_tree, new_tree = gmm.read_tree(root / "mono_ali" / "tree"), gmm.read_tree(root / "tri1" / "tree")
    old_tm, _ = gmm.read_model(root / "mono_ali" / "final.mdl", old_tree)
    new_tm, _ = gmm.read_model(root / "tri1" / "final.mdl", new_tree)
    store = transition_store(root / "mono_ali")
    ali = {utt: np.asarray(store[utt]) for utt in store}
    converted = convert_alignment(ali, old_tm, old_tree, new_tm, new_tree)
    old, new = gmm.TransitionTable(old_tm, old_tree), gmm.TransitionTable(new_tm, new_tree)
    for utt, tids in ali.items():
        out = converted[utt]
        assert len(out) == len(tids)
        assert (new.phone[out] == old.phone[tids]).all() and (new.hmm_state[out] == old.hmm_state[tids]).all()
        assert (new.self_loop[out] == old.self_loop[tids]).all()

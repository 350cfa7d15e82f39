"""HCLG construction and decoding on a tiny lexicon + LM + hand-made monophone model with a known best path."""
import numpy as np
import pytest

from asr_kd.errors import AsrKdError
from asr_kd.lang.grammar import make_lang_test
from asr_kd.lang.ngram import train_kneser_ney, write_arpa
from asr_kd.lang.prepare_lang import prepare_lang, read_symbol_table
from tests.test_lang import make_dict

LM_TEXT = ["C AB", "A", "B C", "BEE C AB", "A C"]
FRAMES_PER_STATE = 4


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """lang_test + monophone model (one unit Gaussian per pdf) + HCLG graph."""
    from asr_kd.decode.graph import make_graph
    from asr_kd.kaldi import gmm

    root = tmp_path_factory.mktemp("sys")
    prepare_lang(make_dict(root), root / "lang")
    write_arpa(train_kneser_ney([s.split() for s in LM_TEXT], 2), root / "lm.arpa")
    make_lang_test(root / "lang", root / "lm.arpa", root / "lang_test")
    topo = gmm.read_topology(root / "lang/topo")
    tree, tm, am = gmm.init_mono(topo, np.zeros(2), np.ones(2))
    (root / "mono").mkdir()
    gmm.write_tree(root / "mono/tree", tree)
    gmm.write_model(root / "mono/final.mdl", tm, am, tree)
    make_graph(root / "lang_test", root / "mono", root / "graph")
    table = gmm.TransitionTable(tm, tree)
    pdf_of = {(phone, state): pdf for phone, state, pdf in table.state_lookup()}
    return root, tm.num_pdfs, pdf_of


def synthetic_loglikes(root, num_pdfs, pdf_of, phone_names):
    """A matrix whose best state sequence walks each phone's HMM states in order (4 frames each)."""
    phones = read_symbol_table(root / "lang/phones.txt")
    pdfs = []
    for name in phone_names:
        num_states = 5 if name == "sil" else 3
        pdfs += [pdf_of[(phones[name], s)] for s in range(num_states) for _ in range(FRAMES_PER_STATE)]
    loglikes = np.full((len(pdfs), num_pdfs), -20.0, np.float32)
    loglikes[np.arange(len(pdfs)), pdfs] = 0.0
    return loglikes


def test_graph_dir_contents(system):
    root, _, _ = system
    assert {p.name for p in (root / "graph").iterdir()} >= {"HCLG.fst", "words.txt", "phones.txt", "meta.json"}


@pytest.mark.parametrize("phones, words", [
    (["sil", "k", "ah", "a", "b", "sil"], ["C", "AB"]),
    (["a", "sil", "b"], ["A", "B"]),            # silence splits "a b" (else the word AB)
    (["a", "b"], ["AB"]),
    (["k", "a", "sil", "k", "ah"], ["C", "C"]),  # unseen bigram C C: reached through back-off
])
def test_decoder_finds_known_best_path(system, phones, words):
    from asr_kd.decode.decoder import decode

    root, num_pdfs, pdf_of = system
    hyps = decode({"u1": synthetic_loglikes(root, num_pdfs, pdf_of, phones)}, root / "graph",
                  root / "mono/final.mdl", acoustic_scale=1.0)
    assert hyps["u1"] == words


def test_decoder_rejects_wrong_pdf_count(system):
    from asr_kd.decode.decoder import decode

    root, num_pdfs, _ = system
    with pytest.raises(AsrKdError, match="utterance bad"):
        decode({"bad": np.zeros((10, num_pdfs + 1), np.float32)}, root / "graph", root / "mono/final.mdl")


def test_gmm_loglikes_match_kaldi(system):
    from asr_kd.decode.decoder import gmm_loglikes
    from asr_kd.kaldi import gmm

    root, _, _ = system
    tree = gmm.read_tree(root / "mono/tree")
    _, am = gmm.read_model(root / "mono/final.mdl", tree)
    rng = np.random.default_rng(0)
    gmms = [gmm.make_gmm(rng.dirichlet(np.ones(3)), rng.normal(size=(3, 2)), rng.uniform(0.5, 2, (3, 2)))
            for _ in range(am.num_pdfs)]
    am = gmm.make_am(gmms)
    feats = rng.normal(size=(7, 2)).astype(np.float32)
    ours = gmm_loglikes(am, {"u": feats})["u"]
    for t in (0, 6):
        for pdf in (0, am.num_pdfs - 1):
            assert ours[t, pdf] == pytest.approx(am.get_pdf(pdf).log_likelihood(feats[t]), abs=1e-3)

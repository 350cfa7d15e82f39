"""N-gram estimator: normalisation for every history, a hand-computed value, ARPA round trip, G.fst."""
import math

import pytest

from asr_kd.errors import AsrKdError
from asr_kd.lang.ngram import BOS, read_arpa, restrict_vocab, train_kneser_ney, write_arpa

CORPUS = [s.split() for s in ["a b c", "a b", "b c a", "c", "a a b"]]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_sum_to_one_for_every_history(order):
    model = train_kneser_ney(CORPUS, order, vocab=["d"])  # "d" is unseen: gets mass through the unigram
    words = sorted(model.vocab - {BOS})
    histories = [()] + [g for k in range(1, order) for g in model.ngrams[k]]
    for h in histories:
        assert sum(10 ** model.log10_prob(w, h) for w in words) == pytest.approx(1.0, abs=1e-9), h
    assert 10 ** model.log10_prob("d", ()) > 0


def test_hand_computed_bigram():
    # "<s> a b </s>", "<s> b </s>": bigram counts (<s> a)1 (a b)1 (b </s>)2 (<s> b)1 -> D2 = 3/(3+2) = 0.6
    # continuation counts a:1 b:2 </s>:1 -> D1 = 2/(2+2) = 0.5, unigram p(b) = 1.5/4 + 0.375/3 = 0.5,
    # p(a) = p(</s>) = 0.25; history <s>: gamma = 0.6*2/2 = 0.6
    model = train_kneser_ney([["a", "b"], ["b"]], order=2)
    assert 10 ** model.log10_prob("b", (BOS,)) == pytest.approx((1 - 0.6) / 2 + 0.6 * 0.5)
    assert 10 ** model.log10_prob("</s>", (BOS,)) == pytest.approx(0.6 * 0.25)  # backed off
    assert 10 ** model.ngrams[1][(BOS,)][1] == pytest.approx(0.6)


def test_arpa_round_trip_and_fake_header(tmp_path):
    model = train_kneser_ney(CORPUS, 3)
    path = tmp_path / "lm.arpa"
    write_arpa(model, path)
    header = "# comment quoting the format:\nBeginning of data mark: \\data\\\n\\1-grams:\np w bo\n\n"
    path.write_text(header + path.read_text())
    again = read_arpa(path)
    assert again.order == 3
    assert again.log10_prob("c", ("a", "b")) == pytest.approx(model.log10_prob("c", ("a", "b")), abs=1e-5)


def test_restrict_vocab_drops_ngrams_with_unknown_words():
    model = restrict_vocab(train_kneser_ney(CORPUS, 2), {"a", "b"})
    assert all("c" not in g for k in model.ngrams for g in model.ngrams[k])
    assert ("a", "b") in model.ngrams[2]


def test_malformed_arpa_names_line(tmp_path):
    path = tmp_path / "bad.arpa"
    path.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\n\\end\\\n")
    with pytest.raises(AsrKdError, match=r"bad.arpa:5"):
        read_arpa(path)


def test_g_fst_from_arpa(tmp_path):
    from tests.test_lang import make_dict
    from asr_kd.kaldi.fst import best_path, read_fst
    from asr_kd.lang.grammar import make_lang_test
    from asr_kd.lang.prepare_lang import prepare_lang, read_symbol_table

    prepare_lang(make_dict(tmp_path), tmp_path / "lang")
    model = train_kneser_ney([["A", "B"], ["C", "ZZZ"]], 2)  # ZZZ is not in the lexicon
    write_arpa(model, tmp_path / "lm.arpa")
    make_lang_test(tmp_path / "lang", tmp_path / "lm.arpa", tmp_path / "lang_test")
    words = read_symbol_table(tmp_path / "lang_test/words.txt")
    G = read_fst(tmp_path / "lang_test/G.fst")
    out, cost = best_path(G, [words["A"], words["B"]])
    assert out == [words["A"], words["B"]]
    expected = -(model.log10_prob("A", (BOS,)) + model.log10_prob("B", (BOS, "A"))
                 + model.log10_prob("</s>", ("A", "B"))) * math.log(10)
    assert cost == pytest.approx(expected, abs=1e-3)

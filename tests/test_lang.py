"""Lang dir construction: symbol tables, disambiguation, topology, and L transducing phones to words."""
from pathlib import Path

import pytest

from asr_kd.errors import AsrKdError
from asr_kd.kaldi.fst import best_path, read_fst
from asr_kd.lang.lexicon import add_disambig, read_dict_dir
from asr_kd.lang.prepare_lang import prepare_lang, read_symbol_table

LEXICON = "A a\nAB a b\nB b\nBEE b\nC k a\nC k ah\n"


def make_dict(root: Path, lexicon: str = LEXICON) -> Path:
    d = root / "dict"
    d.mkdir(parents=True, exist_ok=True)
    (d / "lexicon.txt").write_text(lexicon + "<UNK> sil\n")
    (d / "silence_phones.txt").write_text("sil\n")
    (d / "optional_silence.txt").write_text("sil\n")
    (d / "nonsilence_phones.txt").write_text("a\nah\nb\nk\n")
    return d


@pytest.fixture()
def lang_dir(tmp_path):
    prepare_lang(make_dict(tmp_path), tmp_path / "lang")
    return tmp_path / "lang"


def test_disambiguation_marks_homophones_and_prefixes():
    lexicon, max_disambig = add_disambig([("A", ("a",)), ("AB", ("a", "b")), ("B", ("b",)), ("BEE", ("b",)),
                                          ("C", ("k", "a"))])
    assert dict(lexicon) == {"A": ("a", "#1"), "AB": ("a", "b"), "B": ("b", "#1"), "BEE": ("b", "#2"),
                             "C": ("k", "a")}
    assert max_disambig == 2


def test_symbol_tables(lang_dir):
    phones = read_symbol_table(lang_dir / "phones.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    assert list(phones)[:6] == ["<eps>", "sil", "a", "ah", "b", "k"]
    # lexicon needs #1, #2; one more for silence in L_disambig; #0 for G's back-off
    assert [p for p in phones if p.startswith("#")] == ["#0", "#1", "#2", "#3"]
    assert list(words) == ["<eps>", "<UNK>", "A", "AB", "B", "BEE", "C", "#0", "<s>", "</s>"]
    assert (lang_dir / "phones/disambig.int").read_text().split() == ["6", "7", "8", "9"]
    assert (lang_dir / "oov.int").read_text().strip() == str(words["<UNK>"])
    assert (lang_dir / "phones/roots.int").read_text().splitlines()[0] == "shared split 1"


def test_topology_loads_in_kaldi(lang_dir):
    import asr_kd.kaldi  # noqa: F401
    import kaldi_hmm_gmm as khg

    topo = khg.HmmTopology()
    topo.read((lang_dir / "topo").read_text())
    assert topo.num_pdf_classes(1) == 5  # silence
    assert topo.num_pdf_classes(2) == 3  # nonsilence
    assert list(topo.phones) == [1, 2, 3, 4, 5]


def test_L_maps_phone_sequences_to_words(lang_dir):
    phones = read_symbol_table(lang_dir / "phones.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    L = read_fst(lang_dir / "L.fst")
    seq = [phones[p] for p in ("k", "ah", "sil", "a", "b")]
    out, cost = best_path(L, seq)
    assert out == [words["C"], words["AB"]]
    assert best_path(L, [phones["k"]]) is None  # an incomplete word is rejected
    # "a b" is AB (one word, no silence decision inside) or A B: the cheaper is AB
    assert best_path(L, [phones["a"], phones["b"]])[0] == [words["AB"]]


def test_L_disambig_needs_disambiguation_symbols(lang_dir):
    phones = read_symbol_table(lang_dir / "phones.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    L = read_fst(lang_dir / "L_disambig.fst")
    assert best_path(L, [phones["b"], phones["#2"]])[0] == [words["BEE"]]
    assert best_path(L, [phones["b"], phones["#1"]])[0] == [words["B"]]
    assert best_path(L, [phones["b"]]) is None
    # silence is followed by the silence disambiguation symbol #3; #0 passes through as a word #0
    out = best_path(L, [phones["sil"], phones["#3"], phones["#0"], phones["k"], phones["a"]])[0]
    assert out == [words["#0"], words["C"]]


def test_bad_lexicon_line_names_file_and_line(tmp_path):
    d = make_dict(tmp_path, "A a\nB\n")
    with pytest.raises(AsrKdError, match=r"lexicon.txt:2"):
        read_dict_dir(d)
    d = make_dict(tmp_path, "A a\nB zz\n")
    with pytest.raises(AsrKdError, match=r"lexicon.txt:2.*zz"):
        read_dict_dir(d)


def test_failed_build_leaves_no_lang_dir(tmp_path):
    d = make_dict(tmp_path, "A a\nB zz\n")
    with pytest.raises(AsrKdError):
        prepare_lang(d, tmp_path / "lang")
    assert not (tmp_path / "lang").exists()


def test_lm_vocabulary_skips_oov_and_silence_words(tmp_path):
    from asr_kd.lang.prepare_lang import lm_vocabulary

    prepare_lang(make_dict(tmp_path, LEXICON + "!SIL sil\n"), tmp_path / "lang")
    assert lm_vocabulary(tmp_path / "lang") == ["A", "AB", "B", "BEE", "C"]

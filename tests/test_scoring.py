"""WER on known pairs and the decode-dir files."""
import json

import pytest

from asr_kd.decode.scoring import map_texts, read_text_table, read_token_map, wer, write_wer_dir
from asr_kd.errors import AsrKdError


def test_known_pair():
    result = wer({"u1": "A B C D"}, {"u1": "A X C"})
    assert (result.substitutions, result.deletions, result.insertions, result.words) == (1, 1, 0, 4)
    assert result.wer == pytest.approx(50.0)
    assert result.alignments[0] == [("C", "A", "A"), ("S", "B", "X"), ("C", "C", "C"), ("D", "D", "***")]


def test_totals_over_utterances_and_missing_hypothesis():
    refs = {"a": ["X", "Y"], "b": ["P"], "c": ["Q", "R"]}
    hyps = {"a": ["X", "Y", "Z"], "b": ["P"]}  # c missing -> 2 deletions
    result = wer(refs, hyps)
    assert (result.substitutions, result.deletions, result.insertions) == (0, 2, 1)
    assert result.wer == pytest.approx(100 * 3 / 5)
    assert result.summary()["sentence_errors"] == 2


def test_hypothesis_without_reference_is_an_error():
    with pytest.raises(AsrKdError, match="zz"):
        wer({"a": "X"}, {"zz": "X"})


def test_write_wer_dir(tmp_path):
    refs, hyps = {"u1": "A B C D", "u2": "E"}, {"u1": "A X C", "u2": "E F"}
    write_wer_dir(tmp_path, wer(refs, hyps), refs, hyps, extra={"acoustic_scale": 0.1})
    summary = json.loads((tmp_path / "wer.json").read_text())
    assert (summary["errors"], summary["words"], summary["acoustic_scale"]) == (3, 5, 0.1)
    assert read_text_table(tmp_path / "hyp.txt") == {"u1": ["A", "X", "C"], "u2": ["E", "F"]}
    blocks = (tmp_path / "per_utt.txt").read_text()
    assert "u1 #csid 2 1 1 0" in blocks and "u2 #csid 1 0 0 1" in blocks
    assert "u1 op  C S C D" in blocks


def test_duplicate_utterance_names_line(tmp_path):
    (tmp_path / "text").write_text("u1 A\nu1 B\n")
    with pytest.raises(AsrKdError, match=r"text:2"):
        read_text_table(tmp_path / "text")


def test_score_map_folds_both_texts_and_keeps_the_unmapped_score(tmp_path):
    """TIMIT's 48 -> 39 folding: ao/aa, ix/ih and cl/vcl/sil merge, so 3 of 4 48-phone errors vanish."""
    from asr_kd.cli import main

    (tmp_path / "map").write_text("aa aa\nao aa\nih ih\nix ih\nsil sil\ncl sil\nvcl sil\nb b\nd d\n")
    (tmp_path / "ref").write_text("u1 sil ao b ix sil\n")
    (tmp_path / "hyp").write_text("u1 cl aa b ih vcl d\n")
    assert main(["score", str(tmp_path / "ref"), str(tmp_path / "hyp"), str(tmp_path / "out"),
                 "--score-map", str(tmp_path / "map")]) == 0
    summary = json.loads((tmp_path / "out" / "wer.json").read_text())
    assert (summary["errors"], summary["words"], summary["insertions"]) == (1, 5, 1)       # only the inserted d
    assert (summary["unmapped"]["errors"], summary["unmapped"]["substitutions"]) == (5, 4)  # 48 phones: 4 sub + 1 ins
    assert read_text_table(tmp_path / "out" / "ref.txt") == {"u1": ["sil", "aa", "b", "ih", "sil"]}
    (tmp_path / "hyp").write_text("u1 sil zz\n")
    assert main(["score", str(tmp_path / "ref"), str(tmp_path / "hyp"), str(tmp_path / "out"),
                 "--score-map", str(tmp_path / "map")]) == 1
    (tmp_path / "map").write_text("aa aa extra\n")
    with pytest.raises(AsrKdError, match=r"map:1: expected"):
        read_token_map(tmp_path / "map")


def test_score_map_deletes_tokens_alone_on_their_line(tmp_path):
    assert map_texts({"u": ["q", "b"]}, {"q": None, "b": "b"}, "reference") == {"u": ["b"]}
    with pytest.raises(AsrKdError, match="utterance u: token 'x' is not in the scoring map"):
        map_texts({"u": ["x"]}, {"b": "b"}, "hypothesis")

"""Corpus preparers on tiny corpora shaped like the real ones, plus the AN4 counts on the real corpus."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_kd.data.audio import load_utterance
from asr_kd.data.datadir import load_datadir
from asr_kd.errors import AsrKdError
from data_prep import an4, librispeech, timit, yesno
from data_prep.timit_phones import fold_to_39

AN4_ROOT = Path(__file__).parents[2] / "shared/corpora/an4"


def write_tone(path, seconds=0.2, rate=16000, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate, subtype="PCM_16", format=fmt)


def read_dict(out):
    d = out / "local" / "dict"
    return {name: (d / name).read_text().splitlines()
            for name in ("lexicon.txt", "nonsilence_phones.txt", "silence_phones.txt", "optional_silence.txt")}


# ---------------------------------------------------------------- AN4

def make_an4(root, ext=".sph", extra_word=None):
    """10 training speakers (so dev gets the 10th), one test speaker, CMU release layout."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "an4.dic").write_text("A  AH\nA(2)  EY\nYES  Y EH S\nNO  N OW\nGO  G OW\n")
    train = [(f"an4_clstk/spk{i:02d}/an{i}-spk{i:02d}-b", f"<s> YES A {extra_word or 'GO'} </s>") for i in range(10)]
    test = [("an4test_clstk/tspk/an9-tspk-b", "NO <sil> A")]
    for part, items in (("train", train), ("test", test)):
        (root / "etc" / f"an4_{part}.fileids").write_text("".join(f"{f}\n" for f, _ in items))
        (root / "etc" / f"an4_{part}.transcription").write_text(
            "".join(f"{words} ({Path(f).name})\n" for f, words in items))
        for fileid, _ in items:
            write_tone((root / "wav" / fileid).with_suffix(ext), fmt="NIST" if ext == ".sph" else None)


@pytest.mark.parametrize("ext", [".sph", ".flac"])
def test_an4_fixture(tmp_path, ext):
    make_an4(tmp_path / "an4", ext)
    sets = an4.prepare(tmp_path, tmp_path / "data")  # the tarball's parent dir is accepted too
    assert sets["dev"].speakers == ["spk09"] and len(sets["train"].speakers) == 9
    assert sets["test"].text == {"tspk-an9-tspk-b": "NO A"}  # fillers dropped, speaker prefix added
    assert sets["train"].text["spk00-an0-spk00-b"] == "YES A GO"
    assert load_utterance(sets["test"], "tspk-an9-tspk-b").shape == (3200,)
    d = read_dict(tmp_path / "data")
    assert d["lexicon.txt"] == ["!SIL SIL", "A AH", "A EY", "GO G OW", "NO N OW", "YES Y EH S"]
    assert d["silence_phones.txt"] == ["SIL"] and d["optional_silence.txt"] == ["SIL"]
    assert d["nonsilence_phones.txt"] == ["AH", "EH", "EY", "G", "N", "OW", "S", "Y"]


def test_an4_oov_names_utterance_and_word(tmp_path):
    make_an4(tmp_path / "an4", ".wav", extra_word="MAYBE")
    with pytest.raises(AsrKdError, match=r"an4_train.transcription:1: utterance 'spk00-an0-spk00-b': "
                                         r"word 'MAYBE' is not in the lexicon"):
        an4.prepare(tmp_path / "an4", tmp_path / "data")
    sets = an4.prepare(tmp_path / "an4", tmp_path / "data", map_oov=True)
    assert sets["train"].text["spk00-an0-spk00-b"] == "YES A <UNK>"
    assert "<UNK> SPN" in read_dict(tmp_path / "data")["lexicon.txt"]


def test_an4_missing_audio_names_utterance(tmp_path):
    make_an4(tmp_path / "an4", ".wav")
    (tmp_path / "an4/wav/an4test_clstk/tspk/an9-tspk-b.wav").unlink()
    with pytest.raises(AsrKdError, match="utterance 'an9-tspk-b': no audio file"):
        an4.prepare(tmp_path / "an4", tmp_path / "data")


@pytest.mark.skipif(not AN4_ROOT.is_dir(), reason=f"AN4 corpus not at {AN4_ROOT}")
def test_an4_real_corpus_counts(tmp_path):
    sets = an4.prepare(AN4_ROOT, tmp_path / "data")
    train, dev, test = sets["train"], sets["dev"], sets["test"]
    assert len(train) + len(dev) == 948 and len(train.speakers) + len(dev.speakers) == 74
    assert (len(test), len(test.speakers)) == (130, 10)
    assert len(dev.speakers) == 7  # every 10th of the 74 sorted training speakers
    assert not set(train.speakers) & set(dev.speakers) and not set(train.speakers + dev.speakers) & set(test.speakers)
    assert test.text["fcaw-an406-fcaw-b"] == "RUBOUT G M E F THREE NINE"
    assert abs(sum(train.utt2dur.values()) + sum(dev.utt2dur.values()) - 0.71 * 3600) < 0.01 * 3600


# ---------------------------------------------------------------- yesno

def test_yesno_fixture(tmp_path):
    names = ["0_0_1_1", "0_1_0_1", "1_1_0_0", "1_0_1_0"]
    for name in names:
        write_tone(tmp_path / "waves_yesno" / f"{name}.wav", rate=8000)
    (tmp_path / "waves_yesno" / "README").write_text("not audio")
    sets = yesno.prepare(tmp_path, tmp_path / "data")
    assert sets["train"].text == {"global-0_0_1_1": "NO NO YES YES", "global-0_1_0_1": "NO YES NO YES"}
    assert sets["test"].utt_ids == ["global-1_0_1_0", "global-1_1_0_0"]
    assert load_utterance(sets["test"], "global-1_0_1_0", expected_rate=8000).shape == (1600,)
    assert read_dict(tmp_path / "data")["lexicon.txt"] == ["<SIL> SIL", "NO N", "YES Y"]


# ---------------------------------------------------------------- LibriSpeech

def make_librispeech(root, subset, readers, words="HELLO WORLD"):
    for reader in readers:
        chapter_dir = root / subset / reader / "100"
        lines = [f"{reader}-100-{n:04d} {words}" for n in range(2)]
        for line in lines:
            write_tone(chapter_dir / f"{line.split()[0]}.flac")
        (chapter_dir / f"{reader}-100.trans.txt").write_text("\n".join(lines) + "\n")


def test_librispeech_mini_layout(tmp_path):
    corpus = tmp_path / "LibriSpeech"
    make_librispeech(corpus, "dev-clean-2", ["1034", "103"])
    make_librispeech(corpus, "train-clean-5", ["19"])
    (tmp_path / "lex.txt").write_text("HELLO\tHH AH0 L OW1\nHELLO\tHH AH1 L OW0\nWORLD\tW ER1 L D\n")
    sets = librispeech.prepare(tmp_path, tmp_path / "data", tmp_path / "lex.txt")
    assert set(sets) == {"dev_clean_2", "train_clean_5"}
    dev = sets["dev_clean_2"]
    assert dev.utt_ids == ["103-100-0000", "103-100-0001", "1034-100-0000", "1034-100-0001"]
    assert dev.speakers == ["103", "1034"] and dev.text["103-100-0001"] == "HELLO WORLD"
    d = read_dict(tmp_path / "data")
    assert d["nonsilence_phones.txt"] == ["AH0 AH1", "D", "ER1", "HH", "L", "OW0 OW1", "W"]  # stress variants share a row
    assert d["lexicon.txt"][:3] == ["!SIL SIL", "HELLO HH AH0 L OW1", "HELLO HH AH1 L OW0"]


def test_librispeech_needs_lexicon_and_checks_oov(tmp_path):
    make_librispeech(tmp_path / "LibriSpeech", "dev-clean-2", ["103"], words="HELLO THERE")
    with pytest.raises(AsrKdError, match="librispeech-lexicon.txt, from https://www.openslr.org/resources/11/"):
        librispeech.prepare(tmp_path, tmp_path / "data", None)
    (tmp_path / "lex.txt").write_text("HELLO\tHH AH0 L OW1\n")
    with pytest.raises(AsrKdError, match=r"103-100.trans.txt:1: utterance '103-100-0000': word 'THERE' is not"):
        librispeech.prepare(tmp_path, tmp_path / "data", tmp_path / "lex.txt")


# ---------------------------------------------------------------- TIMIT

PHN = "0 2000 h#\n2000 2600 q\n2600 3000 bcl\n3000 3200 b\n3200 3600 ix\n"


def make_timit(root):
    speakers = [("TRAIN", "DR1", "FCJF0"), ("TEST", "DR1", "MDAB0"), ("TEST", "DR1", "FAKS0")]
    speakers += [("TEST", "DR1", s.upper()) for s in (timit.CORE_TEST_SPEAKERS | timit.DEV_SPEAKERS)
                 - {"mdab0", "faks0"}]
    for part, region, spk in speakers:
        for sentence in ("SA1", "SI1027", "SX37"):
            stem = root / part / region / spk / sentence
            write_tone(stem.with_suffix(".WAV"), seconds=0.25, fmt="NIST")
            stem.with_suffix(".PHN").write_text(PHN)


def test_timit_fixture(tmp_path):
    make_timit(tmp_path / "TIMIT")
    sets = timit.prepare(tmp_path, tmp_path / "data")
    assert sets["train"].utt_ids == ["fcjf0-si1027", "fcjf0-sx37"]  # SA excluded
    assert len(sets["test"].speakers) == 24 and len(sets["dev"].speakers) == 50
    assert sets["dev"].text["faks0-sx37"] == "sil vcl b ix"  # 61 -> 48, q deleted
    assert fold_to_39("sil vcl b ix".split()) == ["sil", "sil", "b", "ih"]
    lexicon = read_dict(tmp_path / "data")["lexicon.txt"]
    assert len(lexicon) == 48 and "sil sil" in lexicon and "vcl vcl" in lexicon
    # the 48 -> 39 scoring map (decode --score-map) folds as timit_phones does
    from asr_kd.decode.scoring import map_texts, read_token_map

    score_map = read_token_map(tmp_path / "data" / "local" / timit.SCORE_MAP)
    assert len(score_map) == 48 and len(set(score_map.values())) == 39
    assert map_texts({"u": "sil vcl b ix".split()}, score_map, "ref") == {"u": fold_to_39("sil vcl b ix".split())}


def test_timit_bad_phone_names_file_line_and_utterance(tmp_path):
    make_timit(tmp_path / "TIMIT")
    (tmp_path / "TIMIT/TRAIN/DR1/FCJF0/SX37.PHN").write_text(PHN + "3600 4000 xx\n")
    with pytest.raises(AsrKdError, match=r"SX37.PHN:6: utterance 'fcjf0-sx37': expected"):
        timit.prepare(tmp_path / "TIMIT", tmp_path / "data")


def test_prepare_cli_prints_counts(tmp_path, capsys):
    make_an4(tmp_path / "an4", ".wav")
    assert an4.main(["prepare", "--corpus", str(tmp_path / "an4"), "--out", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "train: 9 utterances, 9 speakers" in out and "test: 1 utterances, 1 speakers" in out
    assert load_datadir(tmp_path / "data" / "dev").utt_ids == ["spk09-an9-spk09-b"]

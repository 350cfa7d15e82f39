"""Kaldi data dirs: round trips, Kaldi order, and errors that name the file, line and utterance."""
import pytest

from asr_kd.cli import main as cli_main
from asr_kd.data.datadir import (Segment, c_order, fix_datadir, load_datadir, read_table, split_by_speaker,
                                 subset_datadir, write_datadir, write_table)
from asr_kd.errors import AsrKdError

SPEAKERS = {"spkA": 3, "spkB": 2, "spkC": 2}


def tables():
    utt2spk = {f"{spk}-u{i}": spk for spk, n in SPEAKERS.items() for i in range(n)}
    return dict(wav_scp={u: f"/audio/{u}.wav" for u in utt2spk}, utt2spk=utt2spk,
                text={u: f"YES NO {u[-1]}" for u in utt2spk}, utt2dur={u: 1.25 for u in utt2spk})


@pytest.fixture
def datadir(tmp_path):
    write_datadir(tmp_path / "d", **tables())
    return tmp_path / "d"


def test_round_trip_and_spk2utt(datadir):
    data = load_datadir(datadir)
    assert data.utt_ids == sorted(tables()["utt2spk"])
    assert data.text == tables()["text"] and data.utt2dur["spkA-u0"] == 1.25
    assert data.spk2utt == {"spkA": ["spkA-u0", "spkA-u1", "spkA-u2"], "spkB": ["spkB-u0", "spkB-u1"],
                            "spkC": ["spkC-u0", "spkC-u1"]}
    assert (datadir / "spk2utt").read_text().splitlines()[1] == "spkB spkB-u0 spkB-u1"


def test_tables_use_c_locale_byte_order(tmp_path):
    keys = ["b", "B", "a_b", "a-b", "ä", "a"]
    write_table(tmp_path / "t", {k: "1" for k in keys})
    written = [line.split()[0] for line in (tmp_path / "t").read_text(encoding="utf-8").splitlines()]
    assert written == ["B", "a", "a-b", "a_b", "b", "ä"]  # uppercase first, '-' < '_' < letters < UTF-8
    assert written == sorted(keys, key=c_order)
    assert list(read_table(tmp_path / "t")) == written


def test_segments_round_trip(tmp_path):
    t = tables()
    utts = list(t["utt2spk"])
    segments = {u: Segment("rec1", i * 1.5, i * 1.5 + 1.0) for i, u in enumerate(utts)}
    data = write_datadir(tmp_path / "d", wav_scp={"rec1": "/audio/rec1.wav"}, utt2spk=t["utt2spk"],
                         text=t["text"], segments=segments)
    assert data.segments == segments and data.recording_of(utts[1]) == "rec1"


def edit_line(path, number, new_line):
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[number - 1] = new_line
    path.write_text("".join(lines), encoding="utf-8")


def error_of(path):
    with pytest.raises(AsrKdError) as e:
        load_datadir(path)
    return str(e.value)


def test_duplicate_utterance_id(datadir):
    edit_line(datadir / "text", 2, "spkA-u0 NO\n")
    assert error_of(datadir) == f"{datadir}/text:2: duplicate utterance id 'spkA-u0' (first on line 1)"


def test_non_utf8_text(datadir):
    (datadir / "text").write_bytes(b"spkA-u0 YES\nspkA-u1 N\xffO\n")
    assert error_of(datadir) == f"{datadir}/text:2: not UTF-8 (byte 0xff at column 10)"


def test_empty_transcript(datadir):
    edit_line(datadir / "text", 3, "spkA-u2 \n")
    assert error_of(datadir) == f"{datadir}/text:3: empty transcript for utterance 'spkA-u2'"


def test_unsorted_keys(datadir):
    lines = (datadir / "utt2dur").read_text().splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    (datadir / "utt2dur").write_text("".join(lines))
    message = error_of(datadir)
    assert message.startswith(f"{datadir}/utt2dur:2: utterance id 'spkA-u0' is out of order (after 'spkA-u1')")


def test_mismatched_key_sets(datadir):
    edit_line(datadir / "wav.scp", 4, "")
    message = error_of(datadir)
    assert f"{datadir}/wav.scp: key set differs from {datadir}/utt2spk" in message
    assert "1 utterance id(s) of utt2spk missing (first: 'spkB-u0')" in message


def test_speaker_order_violation_names_utterance(tmp_path):
    t = tables()
    t["utt2spk"]["aaa-late"] = "spkZ"  # sorts first but belongs to the last speaker
    for name in ("wav_scp", "text", "utt2dur"):
        t[name]["aaa-late"] = t[name]["spkA-u0"]
    with pytest.raises(AsrKdError, match=r"utt2spk:2: utterance 'spkA-u0' of speaker 'spkA' sorts after "
                                         r"'aaa-late' of speaker 'spkZ'"):
        write_datadir(tmp_path / "d", **t)
    assert not (tmp_path / "d").exists()  # an invalid dir never lands


def test_spk2utt_must_invert_utt2spk(datadir):
    edit_line(datadir / "spk2utt", 2, "spkB spkB-u1\n")
    assert error_of(datadir).startswith(f"{datadir}/spk2utt:2: speaker 'spkB' disagrees with utt2spk")


def test_fix_keeps_intersection_and_reports(datadir):
    text = (datadir / "text").read_text().splitlines(keepends=True)
    text = text[::-1] + [text[0]]  # unsorted, and a duplicate
    text[1] = "spkC-u0\n"  # empty transcript
    (datadir / "text").write_text("".join(text))
    edit_line(datadir / "wav.scp", 1, "")  # spkA-u0 has no audio
    dropped = fix_datadir(datadir)
    assert dropped == {"text": ["spkA-u0", "spkC-u0"], "utt2spk": ["spkA-u0", "spkC-u0"],
                       "utt2dur": ["spkA-u0", "spkC-u0"], "wav.scp": ["spkC-u0"]}
    data = load_datadir(datadir)
    assert data.utt_ids == ["spkA-u1", "spkA-u2", "spkB-u0", "spkB-u1", "spkC-u1"]
    assert data.spk2utt["spkC"] == ["spkC-u1"]


def test_subset(datadir, tmp_path):
    by_first = subset_datadir(datadir, tmp_path / "first", first=2)
    assert by_first.utt_ids == ["spkA-u0", "spkA-u1"] and set(by_first.wav_scp) == set(by_first.utt2spk)
    by_spk = subset_datadir(datadir, tmp_path / "spk", speakers=["spkB"])
    assert by_spk.utt_ids == ["spkB-u0", "spkB-u1"] and by_spk.utt2dur == {"spkB-u0": 1.25, "spkB-u1": 1.25}
    by_utt = subset_datadir(datadir, tmp_path / "utt", utts=["spkC-u1"])
    assert by_utt.text == {"spkC-u1": "YES NO 1"}
    with pytest.raises(AsrKdError, match="not in the data dir \\(first: 'nope'\\)"):
        subset_datadir(datadir, tmp_path / "bad", utts=["nope"])


def test_split_by_speaker_is_disjoint_and_seeded(datadir, tmp_path):
    rest, held = split_by_speaker(datadir, tmp_path / "rest", tmp_path / "held", fraction=0.34, seed=1)
    assert len(held.speakers) == 1 and not set(rest.speakers) & set(held.speakers)
    assert sorted(rest.utt_ids + held.utt_ids) == load_datadir(datadir).utt_ids
    rest2, held2 = split_by_speaker(datadir, tmp_path / "rest2", tmp_path / "held2", fraction=0.34, seed=1)
    assert held2.speakers == held.speakers
    rest3, held3 = split_by_speaker(datadir, tmp_path / "r3", tmp_path / "h3", speakers=["spkA", "spkC"])
    assert rest3.speakers == ["spkB"] and held3.speakers == ["spkA", "spkC"]


def test_cli_validate_and_subset(datadir, tmp_path, capsys):
    assert cli_main(["validate-data-dir", str(datadir)]) == 0
    assert "7 utterances, 3 speakers, valid" in capsys.readouterr().out
    (tmp_path / "spk.list").write_text("spkC\n")
    assert cli_main(["subset-data-dir", str(datadir), str(tmp_path / "s"), "--speakers", str(tmp_path / "spk.list")]) == 0
    assert load_datadir(tmp_path / "s").utt_ids == ["spkC-u0", "spkC-u1"]
    edit_line(datadir / "text", 2, "spkA-u0 NO\n")
    assert cli_main(["validate-data-dir", str(datadir)]) == 1
    assert "text:2: duplicate utterance id 'spkA-u0'" in capsys.readouterr().err


def test_cli_fix_and_split(datadir, tmp_path, capsys):
    edit_line(datadir / "utt2spk", 1, "")  # spkA-u0 loses its speaker
    assert cli_main(["fix-data-dir", str(datadir)]) == 0
    out = capsys.readouterr().out
    assert "text: dropped 1 (first: spkA-u0)" in out and "6 utterances, 3 speakers" in out
    (tmp_path / "held.list").write_text("spkB\n")
    assert cli_main(["split-data-dir", str(datadir), str(tmp_path / "rest"), str(tmp_path / "held"),
                     "--speakers", str(tmp_path / "held.list")]) == 0
    assert load_datadir(tmp_path / "held").speakers == ["spkB"]
    assert load_datadir(tmp_path / "rest").speakers == ["spkA", "spkC"]

"""Speed perturbation: Kaldi's prefixed copies, Kaldi's wav.scp entries read in-process, durations, errors."""
import numpy as np
import pytest
import soundfile as sf

from asr_kd.cli import main
from asr_kd.data.audio import change_speed, load_utterance, parse_speed_entry, speed_entry, utterance_duration
from asr_kd.data.datadir import Segment, load_datadir, write_datadir
from asr_kd.data.features import compute_features
from asr_kd.data.perturb import perturb_speed
from asr_kd.errors import AsrKdError

RATE = 16000


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def data(tmp_path):
    for name, seconds in (("a1", 1.0), ("a2", 0.5), ("b1", 0.8)):
        sf.write(tmp_path / f"{name}.wav", tone(seconds), RATE)
    wav_scp = {f"spk{n[0]}-{n}": str(tmp_path / f"{n}.wav") for n in ("a1", "a2", "b1")}
    return write_datadir(tmp_path / "train", wav_scp=wav_scp, utt2spk={u: u.split("-")[0] for u in wav_scp},
                         text={u: "HELLO" for u in wav_scp}, utt2dur={"spka-a1": 1.0, "spka-a2": 0.5, "spkb-b1": 0.8})


def test_three_way_copies_are_prefixed_like_kaldi(data, tmp_path):
    sp = perturb_speed(data, tmp_path / "train_sp")
    assert len(sp) == 9 and sp.speakers == ["sp0.9-spka", "sp0.9-spkb", "sp1.1-spka", "sp1.1-spkb", "spka", "spkb"]
    assert sp.utt2spk["sp1.1-spkb-b1"] == "sp1.1-spkb" and sp.text["sp0.9-spka-a2"] == "HELLO"
    assert sp.wav_scp["spka-a1"] == data.wav_scp["spka-a1"]  # factor 1: the originals unchanged
    assert sp.wav_scp["sp0.9-spka-a1"] == f"sox {data.wav_scp['spka-a1']} -t wav - speed 0.9 |"
    assert sp.utt2dur["sp0.9-spka-a1"] == pytest.approx(1 / 0.9, abs=1e-4)
    assert sp.utt2dur["sp1.1-spkb-b1"] == pytest.approx(0.8 / 1.1, abs=1e-4)


def test_speed_entries_are_resampled_in_process(data, tmp_path):
    sp = perturb_speed(data, tmp_path / "train_sp", [0.9, 1.1])
    original = load_utterance(data, "spka-a1")
    slow, fast = load_utterance(sp, "sp0.9-spka-a1"), load_utterance(sp, "sp1.1-spka-a1")
    assert abs(len(slow) - len(original) / 0.9) <= 1 and abs(len(fast) - len(original) / 1.1) <= 1
    peak = np.argmax(np.abs(np.fft.rfft(slow))) * RATE / len(slow)  # pitch moves with speed, as sox's `speed`
    assert peak == pytest.approx(440 * 0.9, abs=3)
    assert utterance_duration(sp, "sp1.1-spka-a1") == pytest.approx(1 / 1.1, abs=1e-4)
    np.testing.assert_array_equal(change_speed(original[:, None], RATE, 0.9)[:, 0], slow)


def test_kaldi_entry_forms_and_segments(data, tmp_path):
    path = data.wav_scp["spka-a1"]
    assert parse_speed_entry(speed_entry(path, 1.1)) == (path, 1.1)
    piped = speed_entry(f"cat {path} |", 0.9)
    assert piped == f"cat {path} | sox -t wav - -t wav - speed 0.9 |"
    assert parse_speed_entry(piped) == (f"cat {path} |", 0.9)
    assert parse_speed_entry(f"sox -t wav {path} -t wav - speed 1.1 |") == (path, 1.1)  # older Kaldi form
    assert parse_speed_entry(f"sox {path} -t wav - speed 1.1 vol 2 |") is None  # anything else: an ordinary pipe
    assert parse_speed_entry(path) is None
    segmented = write_datadir(tmp_path / "seg", wav_scp={"rec": path}, utt2spk={"s-u1": "s", "s-u2": "s"},
                              segments={"s-u1": Segment("rec", 0.0, 0.5), "s-u2": Segment("rec", 0.5, -1)})
    sp = perturb_speed(segmented, tmp_path / "seg_sp", [0.5, 1.0])
    assert sp.segments["sp0.5-s-u2"] == Segment("sp0.5-rec", 1.0, -1)
    assert sp.wav_scp["sp0.5-rec"] == f"sox {path} -t wav - speed 0.5 |"
    assert len(load_utterance(sp, "sp0.5-s-u1")) == pytest.approx(2 * len(load_utterance(segmented, "s-u1")), abs=1)


def test_features_of_a_perturbed_dir_and_cli(data, tmp_path, capsys):
    assert main(["perturb-speed", str(data.path), str(tmp_path / "train_sp"), "--factors", "0.9", "1.0", "1.1"]) == 0
    assert "9 utterances, 6 speakers" in capsys.readouterr().out
    store = compute_features(tmp_path / "train_sp", tmp_path / "fbank", jobs=2)
    lengths = dict(zip(store.keys, store.lengths()))
    assert lengths["sp0.9-spka-a1"] > lengths["spka-a1"] > lengths["sp1.1-spka-a1"]
    assert load_datadir(tmp_path / "train_sp").utt2dur is not None


def test_bad_factors_are_refused(data, tmp_path, capsys):
    with pytest.raises(AsrKdError, match=r"speed factors \[3.0\]: each must be in \[0.5, 2.0\]"):
        perturb_speed(data, tmp_path / "x", [0.9, 3.0])
    with pytest.raises(AsrKdError, match="given twice"):
        perturb_speed(data, tmp_path / "x", [0.9, 0.9])
    assert not (tmp_path / "x").exists()
    assert main(["perturb-speed", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1
    assert "data dir not found" in capsys.readouterr().err

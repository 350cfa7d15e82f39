"""Audio reading: formats, pipes, segments, and errors that name the utterance and file."""
import numpy as np
import pytest
import soundfile as sf

from asr_kd.data.audio import audio_info, compute_utt2dur, load_utterance, read_audio
from asr_kd.data.datadir import Segment, write_datadir
from asr_kd.errors import AsrKdError


def tone(seconds=0.5, rate=16000, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    pcm = np.round(x * 32767).astype(np.int16)
    return pcm if channels == 1 else np.stack([pcm, pcm // 2], axis=1)


def write(path, pcm, rate=16000, **kw):
    sf.write(str(path), pcm, rate, subtype="PCM_16", **kw)
    return path


@pytest.mark.parametrize("name,fmt", [("a.wav", None), ("a.flac", None), ("a.sph", "NIST")])
def test_reads_wav_flac_sphere_as_scaled_float32(tmp_path, name, fmt):
    pcm = tone()
    samples = read_audio(write(tmp_path / name, pcm, format=fmt), utt="u1")
    assert samples.dtype == np.float32 and samples.shape == pcm.shape
    np.testing.assert_array_equal(samples, pcm / 32768.0)  # Kaldi/soundfile scaling: [-1, 1)


def test_missing_file_names_utterance(tmp_path):
    with pytest.raises(AsrKdError, match=f"utterance 'u7' \\({tmp_path}/nope.wav\\): audio file not found"):
        read_audio(tmp_path / "nope.wav", utt="u7")


def test_corrupt_audio_names_utterance(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x01garbage" * 10)
    with pytest.raises(AsrKdError, match=f"utterance 'u8' \\({tmp_path}/bad.wav\\): cannot read audio"):
        read_audio(tmp_path / "bad.wav", utt="u8")


def test_wrong_rate_is_an_error_unless_resampling(tmp_path):
    path = write(tmp_path / "a8k.wav", tone(1.0, rate=8000), rate=8000)
    with pytest.raises(AsrKdError, match="utterance 'u9' .*: sample rate 8000 Hz, expected 16000 Hz"):
        read_audio(path, utt="u9")
    resampled = read_audio(path, resample=True, utt="u9")
    assert resampled.dtype == np.float32 and len(resampled) == 16000
    spectrum = np.abs(np.fft.rfft(resampled))
    assert abs(np.argmax(spectrum) * 16000 / len(resampled) - 440) < 2  # still a 440 Hz tone


def test_multichannel_needs_a_channel(tmp_path):
    pcm = tone(channels=2)
    path = write(tmp_path / "st.wav", pcm)
    with pytest.raises(AsrKdError, match="utterance 'u3' .*: audio has 2 channels; choose one"):
        read_audio(path, utt="u3")
    np.testing.assert_array_equal(read_audio(path, utt="u3", channel=1), pcm[:, 1] / 32768.0)


def test_zero_length_audio(tmp_path):
    path = write(tmp_path / "empty.wav", np.zeros(0, dtype=np.int16))
    with pytest.raises(AsrKdError, match="utterance 'u0' .*: audio has no samples"):
        read_audio(path, utt="u0")


def test_load_utterance_pipe_and_segments(tmp_path):
    pcm = tone(2.0)
    rec = write(tmp_path / "rec.wav", pcm)
    utt2spk = {"s-a": "s", "s-b": "s", "s-c": "s"}
    plain = write_datadir(tmp_path / "plain", wav_scp={"s-a": str(rec), "s-b": f"cat {rec} |", "s-c": str(rec)},
                          utt2spk=utt2spk)
    np.testing.assert_array_equal(load_utterance(plain, "s-b"), load_utterance(plain, "s-a"))
    segs = {"s-a": Segment("r", 0.25, 0.75), "s-b": Segment("p", 1.0, -1), "s-c": Segment("r", 1.5, 2.0)}
    cut = write_datadir(tmp_path / "seg", wav_scp={"p": f"cat {rec} |", "r": str(rec)}, utt2spk=utt2spk,
                        segments=segs)
    np.testing.assert_array_equal(load_utterance(cut, "s-a"), pcm[4000:12000] / 32768.0)
    np.testing.assert_array_equal(load_utterance(cut, "s-b"), pcm[16000:] / 32768.0)
    assert compute_utt2dur(cut) == {"s-a": 0.5, "s-b": 1.0, "s-c": 0.5}
    assert compute_utt2dur(plain) == {"s-a": 2.0, "s-b": 2.0, "s-c": 2.0}


def test_failing_pipe_names_utterance(tmp_path):
    data = write_datadir(tmp_path / "d", wav_scp={"s-a": "cat /no/such.wav |"}, utt2spk={"s-a": "s"})
    with pytest.raises(AsrKdError, match="utterance 's-a' \\(cat /no/such.wav \\|\\): command failed with exit code 1"):
        load_utterance(data, "s-a")


def test_segment_past_the_end(tmp_path):
    rec = write(tmp_path / "rec.wav", tone(1.0))
    data = write_datadir(tmp_path / "d", wav_scp={"r": str(rec)}, utt2spk={"s-a": "s"},
                         segments={"s-a": Segment("r", 0.5, 3.0)})
    with pytest.raises(AsrKdError, match="utterance 's-a' .*: segment 0.5..3.0 s is beyond the audio"):
        load_utterance(data, "s-a")


def test_audio_info_reads_header_only(tmp_path):
    info = audio_info(write(tmp_path / "a.flac", tone(0.75, rate=8000), rate=8000))
    assert (info.sample_rate, info.num_samples, info.channels, info.duration) == (8000, 6000, 1, 0.75)

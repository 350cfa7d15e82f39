"""Features: Kaldi's fbank definition (checked against an independent numpy version), frame counts,
deltas, CMVN, the store's meta, bad utterances, Kaldi ark round trip, the CLI."""
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
import soundfile as sf

from asr_kd.cli import main
from asr_kd.data.datadir import write_datadir
from asr_kd.data.features import (CmvnConfig, FeatureConfig, add_deltas, apply_cmvn, cmvn_stats, compute_features,
                                  compute_static, config_hash, delta_windows, load_features, num_frames)
from asr_kd.data.kaldi_io import export_kaldi, import_kaldi
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError
from asr_kd.parallel import Jobs

AN4 = Path(__file__).parents[2] / "shared/corpora/an4"
needs_an4 = pytest.mark.skipif(not (AN4 / "wav").is_dir(), reason=f"AN4 corpus not found at {AN4}")


# ---------------------------------------------------------------- an independent Kaldi fbank

def mel(freq):
    return 1127.0 * np.log(1.0 + np.asarray(freq) / 700.0)


def kaldi_mel_banks(num_bins: int, sample_rate: int, num_fft_bins: int, low: float = 20.0) -> np.ndarray:
    """Kaldi MelBanks: triangles equally spaced in mel between low and Nyquist, over fft bins 0..N/2-1."""
    mel_low, mel_high = mel(low), mel(sample_rate / 2)
    step = (mel_high - mel_low) / (num_bins + 1)
    bin_mels = mel(np.arange(num_fft_bins) * sample_rate / (2 * num_fft_bins))
    banks = np.zeros((num_bins, num_fft_bins))
    for b in range(num_bins):
        left, center, right = mel_low + b * step, mel_low + (b + 1) * step, mel_low + (b + 2) * step
        rising = (bin_mels > left) & (bin_mels <= center)
        falling = (bin_mels > center) & (bin_mels < right)
        banks[b, rising] = (bin_mels[rising] - left) / (center - left)
        banks[b, falling] = (right - bin_mels[falling]) / (right - center)
    return banks


def reference_fbank(samples: np.ndarray, num_bins: int = 40, sample_rate: int = 16000) -> np.ndarray:
    """Kaldi's compute-fbank-feats (dither 0, snip_edges) in float64 numpy, written from the definition."""
    x = np.asarray(samples, np.float64) * 32768.0
    length, shift, fft = 400, 160, 512
    count = 1 + (len(x) - length) // shift
    frames = np.stack([x[i * shift : i * shift + length] for i in range(count)])
    frames = frames - frames.mean(axis=1, keepdims=True)
    emphasised = frames.copy()
    emphasised[:, 1:] -= 0.97 * frames[:, :-1]
    emphasised[:, 0] -= 0.97 * frames[:, 0]
    povey = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1))) ** 0.85
    power = np.abs(np.fft.rfft(emphasised * povey, n=fft)) ** 2
    energies = power[:, : fft // 2] @ kaldi_mel_banks(num_bins, sample_rate, fft // 2).T
    return np.log(np.maximum(energies, np.finfo(np.float32).eps))


def an4_files(count: int) -> list[Path]:
    return sorted((AN4 / "wav" / "an4_clstk").glob("*/*.flac"))[:count]


@needs_an4
def test_fbank_matches_kaldi_definition_on_an4():
    for path in an4_files(3):
        samples, rate = sf.read(path, dtype="float32")
        ours = compute_static(samples, FeatureConfig())
        ref = reference_fbank(samples)
        assert ours.shape == ref.shape == (num_frames(len(samples), FeatureConfig()), 40)
        np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


def test_fbank_matches_kaldi_definition_on_synthetic_signal():
    t = np.arange(12345) / 16000
    rng = np.random.default_rng(0)
    signal = 0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t) + 0.01 * rng.standard_normal(len(t))
    samples = signal.astype(np.float32)
    ours = compute_static(samples, FeatureConfig())
    np.testing.assert_allclose(ours, reference_fbank(samples), atol=1e-3, rtol=0)
    assert ours.shape == (75, 40)  # 1 + (12345 - 400) // 160


def test_num_bins_and_dither_are_set_explicitly():
    """kaldi-native-fbank defaults to 23 bins and dither 3e-5: ours must be 40 bins, deterministic."""
    samples = np.random.default_rng(1).uniform(-0.1, 0.1, 4000).astype(np.float32)
    first, second = compute_static(samples, FeatureConfig()), compute_static(samples, FeatureConfig())
    assert first.shape[1] == 40 and np.array_equal(first, second)
    assert compute_static(samples, FeatureConfig(kind="mfcc")).shape[1] == 13


# ---------------------------------------------------------------- frame counts

@pytest.mark.parametrize("count, expected", [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2), (16000, 98), (16159, 99), (16239, 99), (16240, 100)])
def test_num_frames_formula(count, expected):
    cfg = FeatureConfig()
    assert num_frames(count, cfg) == expected == (0 if count < 400 else 1 + (count - 400) // 160)
    if count > 0:
        samples = np.random.default_rng(count).uniform(-0.5, 0.5, count).astype(np.float32)
        assert len(compute_static(samples, cfg)) == expected


def test_num_frames_without_snip_edges_matches_backend():
    cfg = FeatureConfig(snip_edges=False)
    for count in (100, 400, 1000, 16080, 16081):
        samples = np.random.default_rng(count).uniform(-0.5, 0.5, count).astype(np.float32)
        assert len(compute_static(samples, cfg)) == num_frames(count, cfg) == (count + 80) // 160


# ---------------------------------------------------------------- deltas and CMVN

def test_delta_windows_are_kaldis():
    first, second = delta_windows(2, 2)[1:]
    np.testing.assert_allclose(first, np.array([-2, -1, 0, 1, 2]) / 10)
    np.testing.assert_allclose(second, np.array([4, 4, 1, -4, -10, -4, 1, 4, 4]) / 100)


def test_deltas_hand_computed():
    ramp = np.arange(10, dtype=np.float32)[:, None]           # x_t = t
    out = add_deltas(ramp, order=2, window=2)
    assert out.shape == (10, 3)
    np.testing.assert_allclose(out[:, 0], ramp[:, 0])
    np.testing.assert_allclose(out[2:8, 1], 1.0, atol=1e-6)    # slope 1 in the interior
    # frame 0 sees x = [0, 0, 0, 1, 2] (edges replicated): (-2*0 - 0 + 0 + 1 + 2*2) / 10
    assert out[0, 1] == pytest.approx(0.5)
    square = (np.arange(12, dtype=np.float32) ** 2)[:, None]  # x_t = t^2: second derivative 2
    np.testing.assert_allclose(add_deltas(square)[4:8, 2], 2.0, atol=1e-5)


def test_deltas_match_kaldi_native_fbank():
    feats = np.random.default_rng(3).normal(size=(37, 13)).astype(np.float32)
    opts = knf.DeltaOptions()
    opts.order, opts.window = 2, 2
    np.testing.assert_allclose(add_deltas(feats), knf.compute_deltas(opts, feats), atol=1e-5)


def test_apply_cmvn_mean_and_variance():
    feats = np.random.default_rng(4).normal(3.0, 2.0, size=(500, 5))
    stats = cmvn_stats(feats)
    assert stats.shape == (2, 6) and stats[0, -1] == 500
    mean_only = apply_cmvn(feats, stats, CmvnConfig())
    np.testing.assert_allclose(mean_only.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(mean_only.std(axis=0), feats.std(axis=0), rtol=1e-5)
    both = apply_cmvn(feats, stats, CmvnConfig(var=True))
    np.testing.assert_allclose(both.std(axis=0), 1, atol=1e-5)


# ---------------------------------------------------------------- a data dir

def make_datadir(root: Path, extra: dict[str, Path] | None = None) -> Path:
    """Six AN4 utterances of two speakers (audio referenced in place), plus `extra` utt -> path."""
    files = [p for spk in ("fash", "fbbh") for p in sorted((AN4 / "wav/an4_clstk" / spk).glob("*.flac"))[:3]]
    wav_scp = {f"{p.parent.name}-{p.stem}": str(p) for p in files}
    wav_scp.update({utt: str(path) for utt, path in (extra or {}).items()})
    utt2spk = {utt: utt.split("-")[0] for utt in wav_scp}
    write_datadir(root / "data", wav_scp=dict(sorted(wav_scp.items())), utt2spk=dict(sorted(utt2spk.items())))
    return root / "data"


@needs_an4
def test_store_meta_and_per_speaker_cmvn(tmp_path):
    data = make_datadir(tmp_path)
    store = compute_features(data, tmp_path / "fbank", jobs=1)
    meta = store.meta
    assert store.keys == sorted(store.keys) and len(store) == 6
    assert meta["config_hash"] == config_hash(FeatureConfig()) and meta["config"]["num_bins"] == 40
    assert meta["dim"] == 40 and meta["dtype"] == "float16" and meta["storage_dtype"] == "float16"
    assert meta["num_frames"] == int(store.lengths().sum()) and meta["num_utts"] == 6
    assert meta["frame_shift_ms"] == 10.0 and meta["sample_rate"] == 16000 and meta["skipped"] == []
    assert meta["cmvn"]["per"] == "speaker" and meta["cmvn"]["applied"]
    num_samples = np.load(store.path / "num_samples.npy")
    assert [num_frames(n, FeatureConfig()) for n in num_samples] == list(store.lengths())
    stats = np.load(store.path / "cmvn_stats.npz")
    assert list(stats["units"]) == ["fash", "fbbh"]
    for spk, spk_stats in zip(stats["units"], stats["stats"]):
        rows = np.concatenate([store[u] for u in store.keys if u.startswith(spk)]).astype(np.float64)
        assert spk_stats[0, -1] == len(rows)
        np.testing.assert_allclose(rows.mean(axis=0), 0, atol=2e-3)   # float16 storage
        assert rows.std() > 1                                             # not normalised away
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def store_bytes(path) -> dict[str, bytes]:
    """Every file of a feature store, for byte-identity checks."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@needs_an4
def test_nj_1_2_and_dask_give_identical_store_bytes(tmp_path):
    data = make_datadir(tmp_path)
    cfg = FeatureConfig(kind="mfcc", deltas=2)
    serial = compute_features(data, tmp_path / "a", cfg, jobs=1)
    parallel = compute_features(data, tmp_path / "b", cfg, jobs=2)
    assert serial.meta["dim"] == 39 and serial.data.dtype == np.float32 and len(serial) == 6
    assert store_bytes(serial.path) == store_bytes(parallel.path)
    assert not (tmp_path / "b.shards").exists()  # scratch shards removed once the store is written
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        on_dask = compute_features(data, tmp_path / "c", cfg, jobs=Jobs(nj=3, dask_scheduler=cluster.scheduler_address))
    assert store_bytes(on_dask.path) == store_bytes(serial.path)


@needs_an4
def test_bad_utterance_in_a_shard_is_named_and_done_shards_are_reused(tmp_path):
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio at all")
    data = make_datadir(tmp_path, {"fbbh-zz-broken": broken})  # the last utterance: in shard 2 of 2
    with pytest.raises(AsrKdError, match="fbbh-zz-broken.*broken.flac"):
        compute_features(data, tmp_path / "out", jobs=2)
    assert not (tmp_path / "out").exists()
    (done,) = [p for p in (tmp_path / "out.shards").iterdir() if (p / "meta.json").is_file()]
    assert len(RaggedStore(done)) == 3 and RaggedStore(done).keys[0].startswith("fash")
    zeros = np.zeros((done / "data.bin").stat().st_size, np.uint8)
    (done / "data.bin").write_bytes(zeros.tobytes())  # a marker: a recomputed shard would not be all zeros
    sf.write(broken.with_suffix(".wav"), np.zeros(1600, np.float32), 16000)
    (data / "wav.scp").write_text((data / "wav.scp").read_text().replace(str(broken), str(broken.with_suffix(".wav"))))
    resumed = compute_features(data, tmp_path / "out", jobs=2)
    fresh = compute_features(data, tmp_path / "fresh", jobs=1)
    assert not (tmp_path / "out.shards").exists() and resumed.keys == fresh.keys and len(resumed) == 7
    for utt in resumed.keys:  # the kept shard was reused as it was, the failed one computed anew
        expected = np.zeros_like(fresh[utt]) if utt.startswith("fash") else fresh[utt]
        np.testing.assert_array_equal(resumed[utt], expected)


@needs_an4
def test_killed_feature_worker_fails_the_stage(tmp_path):
    data = make_datadir(tmp_path, {"fbbh-zz-kill": "kill -9 $PPID |"})  # the pipe kills the worker running it
    with pytest.raises(AsrKdError, match="worker process was lost"):
        compute_features(data, tmp_path / "out", jobs=2)
    assert not (tmp_path / "out").exists()


@needs_an4
def test_bad_utterance_named_or_skipped(tmp_path):
    (tmp_path / "broken.flac").write_bytes(b"not audio at all")
    sf.write(tmp_path / "short.wav", np.zeros(300, np.float32), 16000)
    data = make_datadir(tmp_path, {"fash-zz-broken": tmp_path / "broken.flac", "fbbh-zz-short": tmp_path / "short.wav"})
    with pytest.raises(AsrKdError, match="fash-zz-broken.*broken.flac"):
        compute_features(data, tmp_path / "out", jobs=1)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no half store
    store = compute_features(data, tmp_path / "out", jobs=1, skip_bad=True)
    assert [s["utt"] for s in store.meta["skipped"]] == ["fash-zz-broken", "fbbh-zz-short"]
    assert "shorter than one frame" in store.meta["skipped"][1]["reason"] and len(store) == 6


@needs_an4
def test_load_features_checks_hash(tmp_path):
    store = compute_features(make_datadir(tmp_path), tmp_path / "f", jobs=1)
    assert load_features(store.path, config_hash(FeatureConfig())).meta["dim"] == 40
    with pytest.raises(AsrKdError, match="does not match"):
        load_features(store.path, config_hash(FeatureConfig(kind="mfcc")))
    with pytest.raises(AsrKdError, match="not a store"):
        load_features(tmp_path)


@needs_an4
def test_kaldi_ark_round_trip(tmp_path):
    import kaldi_native_io as kio

    store = compute_features(make_datadir(tmp_path), tmp_path / "f", FeatureConfig(dtype="float32"), jobs=1)
    assert export_kaldi(store, tmp_path / "feats.ark", tmp_path / "feats.scp") == 6
    reader = kio.RandomAccessFloatMatrixReader(f"scp:{tmp_path / 'feats.scp'}")
    np.testing.assert_array_equal(reader[store.keys[2]], store[store.keys[2]])
    for table in ("feats.scp", "feats.ark"):
        back = import_kaldi(tmp_path / table, tmp_path / f"back_{table}", {"frame_shift_ms": 10.0})
        assert back.keys == store.keys and back.meta["dim"] == 40
        np.testing.assert_array_equal(np.asarray(back.data), np.asarray(store.data))


@needs_an4
def test_cli_compute_mfcc_with_overrides(tmp_path, capsys):
    data = make_datadir(tmp_path)
    assert main(["compute-features", str(data), str(tmp_path / "m"), "--num-jobs", "1",
                 "--set", "kind=mfcc", "--set", "deltas=2", "--set", "cmvn.var=true"]) == 0
    store = load_features(tmp_path / "m")
    assert store.meta["dim"] == 39 and store.meta["cmvn"]["var"] is True
    assert "6 utterances" in capsys.readouterr().out
    assert main(["compute-features", str(data), str(tmp_path / "x"), "--set", "kind=plp"]) == 1
    assert "feature kind 'plp'" in capsys.readouterr().err


def test_torchaudio_backend_error_is_clear():
    try:
        from torchaudio.compliance import kaldi  # noqa: F401
    except Exception:
        with pytest.raises(AsrKdError, match="torchaudio"):
            compute_static(np.zeros(1000, np.float32), FeatureConfig(backend="torchaudio"))
    else:
        samples = np.random.default_rng(5).uniform(-0.3, 0.3, 8000).astype(np.float32)
        np.testing.assert_allclose(compute_static(samples, FeatureConfig(backend="torchaudio")),
                                   compute_static(samples, FeatureConfig()), atol=1e-3)

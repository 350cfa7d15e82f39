"""Model package, transcribe, ONNX / TorchScript / int8 backends, word times, bad input (issue 13).

The package is built from test_graph_decode's tiny hand-made system (lexicon + bigram +
monophone HMM + HCLG) and a small random network: the words it outputs mean nothing, but every
stage runs, and parity between backends, checksums, resampling and errors are all checkable.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from asr_kd.config import to_dict
from asr_kd.data.features import CmvnConfig, FeatureConfig, apply_cmvn, apply_cmvn_sliding, cmvn_stats, config_hash
from asr_kd.data.store import write_store
from asr_kd.errors import AsrKdError
from tests.test_graph_decode import system as graph_system  # noqa: F401 (a fixture, used by name)

RATE = 16000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Band-limited noise bursts with pauses: energy that moves over time and frequency."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (300, 700, 1500, 3100))
    envelope = (np.sin(2 * np.pi * 2.5 * t) > 0).astype(np.float64)
    return (0.05 * tone * envelope + 0.01 * rng.normal(size=n)).astype(np.float32)


@pytest.fixture(scope="module")
def system(graph_system):
    """Everything `asr-kd package` reads: network dir, graph (+ tree, final.mdl), store, priors, lang."""
    from asr_kd.nnet.models import ModelConfig, ModelSpec, init_model, save_final

    root, num_pdfs, _ = graph_system  # lang_test, mono/{tree,final.mdl}, graph/ of test_graph_decode
    spec = ModelSpec(ModelConfig(hidden_layers=2, hidden_dim=32), feat_dim=40, left_context=2, right_context=2,
                     num_pdfs=num_pdfs)
    (root / "dnn").mkdir()
    save_final(root / "dnn/final.pt", init_model(spec, seed=0).state_dict(), spec)
    (root / "ali").mkdir()
    priors = np.random.default_rng(0).uniform(0.5, 1.5, num_pdfs)
    np.save(root / "ali/priors.npy", priors / priors.sum())
    cfg = FeatureConfig().resolved()
    cmvn = {**to_dict(CmvnConfig(per="sliding")), "applied": True}
    write_store(root / "feats", [("u1", np.zeros((3, 40), np.float32))],
                {"config": to_dict(cfg), "config_hash": config_hash(cfg), "dim": 40, "frame_shift_ms": 10.0,
                 "cmvn": cmvn, "storage_dtype": "float16"})
    audio = root / "audio"
    audio.mkdir()
    x = speechlike(1.5)
    sf.write(audio / "a.wav", x, RATE, subtype="PCM_16")
    sf.write(audio / "a_8k.wav", soxr.resample(x, RATE, 8000), 8000, subtype="PCM_16")
    sf.write(audio / "a_44k.flac", soxr.resample(x, RATE, 44100), 44100, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def pkg(system):
    from asr_kd.deploy.package import make_package

    root = system
    return make_package(root / "dnn", root / "graph", root / "pkg", feats=root / "feats", ali=root / "ali",
                        lang=root / "lang_test", hmm_dir=root / "mono")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "asr_kd", *map(str, args)], capture_output=True, text=True, cwd=cwd)


# ---------------------------------------------------------------- sliding-window CMN

def kaldi_sliding_oracle(x: np.ndarray, cfg: CmvnConfig) -> np.ndarray:
    """Kaldi's SlidingWindowCmnInternal, frame by frame as in cmvn.cc (the test oracle)."""
    n, out = len(x), np.zeros_like(x, dtype=np.float64)
    for t in range(n):
        if cfg.center:
            start = t - cfg.window // 2
            end = start + cfg.window
        else:
            start, end = t - cfg.window, t + 1
        if start < 0:
            end -= start
            start = 0
        if not cfg.center and end > t:
            end = max(t + 1, cfg.min_window)
        if end > n:
            start -= end - n
            end = n
            start = max(start, 0)
        window = x[start:end].astype(np.float64)
        out[t] = x[t] - window.mean(0)
        if cfg.var:
            out[t] /= np.sqrt(np.maximum(window.var(0), 1e-20))
    return out


@pytest.mark.parametrize("center,var,window", [(True, False, 600), (True, False, 7), (False, False, 7),
                                                (True, True, 9), (False, True, 5)])
def test_sliding_cmn_equals_kaldi_definition(center, var, window):
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(40, 3)).astype(np.float32)
    cfg = CmvnConfig(per="sliding", var=var, window=window, center=center, min_window=4)
    np.testing.assert_allclose(apply_cmvn_sliding(x, cfg), kaldi_sliding_oracle(x, cfg), atol=1e-4)


def test_sliding_window_longer_than_utterance_is_utterance_cmn():
    x = np.random.default_rng(2).normal(size=(50, 4)).astype(np.float32)
    np.testing.assert_allclose(apply_cmvn_sliding(x, CmvnConfig(per="sliding", window=600)),
                               apply_cmvn(x, cmvn_stats(x), CmvnConfig(per="utterance")), atol=1e-5)


def test_sliding_cmn_config_is_checked():
    with pytest.raises(AsrKdError, match="window 0"):
        CmvnConfig(per="sliding", window=0).check()


# ---------------------------------------------------------------- package

def test_package_records_what_transcribe_needs(pkg):
    meta = pkg.meta
    assert {"model.pt", "priors.npy", "am.ts", "hmm/final.mdl", "hmm/tree", "graph/HCLG.fst", "graph/words.txt",
            "lang/align_lexicon.txt"} <= set(meta["files"])
    assert meta["cmvn_trained"]["per"] == meta["cmvn_inference"]["per"] == "sliding"
    assert meta["decode"]["acoustic_scale"] == 0.1 and meta["decode"]["tuned_on"] is None
    assert meta["environment"]["torch"] == torch.__version__


def test_package_works_from_another_directory(pkg, system, tmp_path):
    moved = tmp_path / "elsewhere" / "pkg"
    shutil.copytree(pkg.path, moved)
    out = run_cli("transcribe", moved, system / "audio/a.wav", "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["file"].endswith("a.wav") and result["duration"] == pytest.approx(1.48, abs=0.02)


@pytest.mark.parametrize("damage", ["alter", "remove"])
def test_package_refuses_a_missing_or_altered_file(pkg, tmp_path, damage):
    from asr_kd.deploy.package import open_package

    copy = tmp_path / "pkg"
    shutil.copytree(pkg.path, copy)
    target = copy / "graph/words.txt"
    if damage == "alter":
        target.write_text(target.read_text() + "EXTRA 999\n")
        match = r"graph/words.txt: changed after packaging"
    else:
        target.unlink()
        match = r"graph/words.txt: missing from the package"
    with pytest.raises(AsrKdError, match=match):
        open_package(copy)


# ---------------------------------------------------------------- backends

def windows(pkg, n=64, seed=0):
    """Random (n, 5 frames x 40) context windows, the test network's input."""
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 5 * 40)).astype(np.float32))


def test_onnx_and_torchscript_equal_pytorch(pkg):
    pytest.importorskip("onnxruntime")
    from asr_kd.deploy.transcribe import OnnxBackend, TorchBackend

    x = windows(pkg)
    ref = TorchBackend(pkg)(x)
    onnx = OnnxBackend(pkg)(x)
    traced = torch.jit.load(str(pkg.file("am.ts")))(x).detach().numpy()
    assert ref.shape == (64, TorchBackend(pkg).spec.num_pdfs)
    assert np.abs(onnx - ref).max() < 1e-4
    assert np.abs(traced - ref).max() < 1e-4
    # log-likelihoods: log posterior minus log prior (the posteriors sum to one)
    prior = np.log(np.load(pkg.file("priors.npy")))
    np.testing.assert_allclose(np.exp(ref + prior).sum(1), 1.0, rtol=1e-5)


def test_int8_is_quantised_and_close_to_fp32(pkg):
    from asr_kd.deploy.transcribe import TorchBackend

    int8 = TorchBackend(pkg, int8=True)
    kinds = {type(m).__module__ for m in int8.module.modules()}
    assert any("quantized" in k for k in kinds)
    x = windows(pkg, 256, seed=1)
    ref, q = TorchBackend(pkg)(x), int8(x)
    assert not np.array_equal(ref, q)
    assert np.abs(ref - q).max() < 0.1
    assert (ref.argmax(1) == q.argmax(1)).mean() > 0.9


def test_backends_give_the_same_words(pkg, system):
    pytest.importorskip("onnxruntime")
    from asr_kd.deploy.transcribe import load_model

    results = {b: load_model(pkg.path, b).transcribe(system / "audio/a.wav") for b in ("torch", "onnx")}
    assert results["torch"].words == results["onnx"].words


# ---------------------------------------------------------------- transcribe

def test_transcript_times_follow_the_best_path(pkg, system):
    from asr_kd import load_model

    model = load_model(pkg.path)
    result = model.transcribe(system / "audio/a.wav")
    assert result.words
    assert len(result.starts) == len(result.ends) == len(result.words)
    edges = [t for pair in zip(result.starts, result.ends) for t in pair]
    assert edges == sorted(edges) and all(e > b for b, e in zip(result.starts, result.ends))
    assert edges[-1] <= result.duration + 1e-6
    ctm = result.ctm().splitlines()
    assert len(ctm) == len(result.words)
    assert all(line.split()[0] == "a.wav" and line.split()[4] == w for line, w in zip(ctm, result.words))


def test_resampled_audio_gives_close_features(pkg, system, caplog):
    from asr_kd.deploy.transcribe import load_model

    model = load_model(pkg.path)
    ref = model.features(system / "audio/a.wav")
    with caplog.at_level("INFO"):
        up = model.features(system / "audio/a_44k.flac")
        down = model.features(system / "audio/a_8k.wav")
    assert "a_44k.flac: resampling 44100 Hz -> 16000 Hz" in caplog.text
    assert "a_8k.wav: resampling 8000 Hz -> 16000 Hz" in caplog.text
    assert up.shape == down.shape == ref.shape
    low_bins = slice(0, 20)  # mel bins below 4 kHz survive the 8 kHz round trip
    assert np.median(np.abs(up - ref)) < 0.05
    assert np.median(np.abs(down[:, low_bins] - ref[:, low_bins])) < 0.1


def test_match_words_known_answer():
    from asr_kd.deploy.transcribe import match_words

    prons = {"BE": [("b", "iy")], "SEE": [("s", "iy"), ("s", "ih")], "AH": [("aa",)]}
    segs = [("sil", 0, 10), ("b", 10, 5), ("iy", 15, 7), ("s", 22, 6), ("iy", 28, 9), ("sil", 37, 5), ("aa", 42, 8)]
    assert match_words(["BE", "SEE", "AH"], segs, prons, {"sil"}) == [(10, 22), (22, 37), (42, 50)]
    assert match_words(["SEE", "BE"], segs, prons, {"sil"}) is None
    assert match_words(["BE", "SEE"], segs, prons, {"sil"}) is None  # AH's phones left over


# ---------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def bad_files(system):
    d = system / "bad"
    d.mkdir()
    (d / "unreadable.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(d / "short.wav", speechlike(0.05), RATE)
    sf.write(d / "silent.wav", np.zeros(RATE, np.float32), RATE)
    sf.write(d / "rate4k.wav", speechlike(1.0)[::4], 4000)
    sf.write(d / "stereo.wav", np.stack([speechlike(1.0), speechlike(1.0, seed=3)], axis=1), RATE)
    with sf.SoundFile(d / "empty.wav", "w", RATE, 1) as _:
        pass
    return d


@pytest.mark.parametrize("name,message", [
    ("unreadable.wav", "cannot read audio"), ("empty.wav", "no samples"), ("short.wav", "too short"),
    ("silent.wav", "silent"), ("rate4k.wav", "4000 Hz cannot be resampled"), ("stereo.wav", "2 channels; choose one"),
    ("missing.wav", "audio file not found")])
def test_bad_audio_names_the_file(pkg, bad_files, name, message):
    from asr_kd.deploy.transcribe import load_model

    with pytest.raises(AsrKdError, match=rf"{name}.*{message}"):
        load_model(pkg.path).transcribe(bad_files / name)


def test_one_bad_file_does_not_stop_the_others(pkg, system, bad_files):
    good = system / "audio/a.wav"
    out = run_cli("transcribe", pkg.path, bad_files / "silent.wav", good, bad_files / "stereo.wav", good)
    assert out.returncode == 1
    assert [line.split()[0] for line in out.stdout.splitlines()] == [str(good), str(good)]
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 3 and "silent.wav" in errors[0] and "stereo.wav" in errors[1]
    assert "2 of 4 files failed" in errors[2]


def test_channel_option_picks_one_channel(pkg, bad_files):
    from asr_kd.deploy.transcribe import load_model

    model = load_model(pkg.path)
    assert model.features(bad_files / "stereo.wav", channel=1).shape[0] > 0
    with pytest.raises(AsrKdError, match="channel 2 asked for, audio has 2"):
        model.features(bad_files / "stereo.wav", channel=2)


def test_import_asr_kd_stays_light_and_exposes_load_model():
    code = ("import sys, asr_kd; assert 'asr_kd.deploy.transcribe' not in sys.modules; "
            "from asr_kd import load_model; from asr_kd.deploy.transcribe import load_model as f; assert load_model is f")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------- choosing on dev, report sections

def test_package_chooses_the_best_dev_frame_accuracy(system, tmp_path):
    from asr_kd.deploy.package import choose_on_dev

    dirs = []
    for name, acc in (("student_T1", 0.50), ("student_T2", 0.61), ("student_T5", 0.58)):
        d = tmp_path / name
        d.mkdir()
        (d / "eval_dev.json").write_text(json.dumps({"frame_acc": acc}))
        dirs.append(d)
    best, scores = choose_on_dev(dirs)
    assert best.name == "student_T2" and scores[str(dirs[0])] == 0.50
    (dirs[0] / "eval_dev.json").unlink()
    with pytest.raises(AsrKdError, match="student_T1/eval_dev.json: missing"):
        choose_on_dev(dirs)


def test_report_shows_int8_next_to_fp32_and_plots_wer_against_latency(tmp_path):
    from asr_kd.report.deploy import deploy_sections
    from asr_kd.report.report import Run, System

    deploy = tmp_path / "exp" / "deploy"
    deploy.mkdir(parents=True)
    for backend, acc, wer, ms in (("torch", 0.5687, 7.63, 13.1), ("int8", 0.5691, 7.76, 5.9)):
        (deploy / f"eval_{backend}_test.json").write_text(json.dumps(
            {"backend": backend, "frame_acc": acc, "params": 307188, "am_ms_per_s": ms, "wer": {"wer": wer}}))
    bench = {"machine": {"load_avg_before": [1.0, 1.0, 1.0]}, "num_members": 4,
             "params": {"ensemble": 1228752, "student": 307188},
             "am_ms_per_s": {"1_thread": {"ensemble": {"cpu": 60.0}, "student_fp32_torch": {"cpu": 12.0},
                                          "student_int8_torch": {"cpu": 5.0}}},
             "goals": {"int8_vs_fp32_am_speedup": {"value": 2.4, "goal": ">= 2", "met": True}}}
    (deploy / "bench_infer.json").write_text(json.dumps(bench))
    ensemble = System("dnn_ensemble (arith, K=4)", "ensemble", tmp_path, {"test_wer": 6.99}, combination="arith")
    parts, images = deploy_sections([Run(tmp_path / "exp", [ensemble], None, {})], tmp_path / "out", plots=True)
    text = "\n".join(parts)
    assert "| deploy | int8 (PyTorch dynamic) | 307188 | 56.91 | 7.76 | 5.90 |" in text
    assert "| deploy | fp32 (PyTorch) | 307188 | 56.87 | 7.63 | 13.10 |" in text
    assert "| ensemble | 1228752 | 60.00 | 6.99 |" in text and "| int8_vs_fp32_am_speedup | 2.4 | >= 2 | yes |" in text
    assert images == ["wer_latency.png"] and (tmp_path / "out" / "wer_latency.png").stat().st_size > 1000


# ---------------------------------------------------------------- ONNX parity on AN4 test (slow)

AN4_RECIPE = Path(os.environ.get("ASR_KD_AN4_RECIPE", Path(__file__).resolve().parents[1] / "recipes" / "an4"))


@pytest.mark.slow
@pytest.mark.skipif(not (AN4_RECIPE / "exp" / "tri1" / "graph_bg" / "HCLG.fst").is_file(),
                    reason=f"no finished AN4 run at {AN4_RECIPE} (make an4, or set ASR_KD_AN4_RECIPE)")
def test_onnx_parity_on_an4_test(tmp_path):
    """Every AN4 test utterance: ONNX log-likelihoods within 1e-4 of PyTorch's, and the same words."""
    pytest.importorskip("onnxruntime")
    from asr_kd.data.features import load_features
    from asr_kd.deploy.package import make_package
    from asr_kd.deploy.transcribe import load_model

    exp, data = AN4_RECIPE / "exp", AN4_RECIPE / "data"
    students = sorted(exp.glob("student_T*[0-9]"))
    pkg = make_package(students, exp / "tri1/graph_bg", tmp_path / "pkg", feats=data / "fbank/train",
                       ali=exp / "tri1_ali", lang=data / "lang_test_bg")
    torch_model, onnx_model = load_model(pkg.path, "torch"), load_model(pkg.path, "onnx")
    store = load_features(data / "fbank/test")
    scale = pkg.decode["acoustic_scale"]
    worst, differ = 0.0, []
    for utt in store.keys:
        x = np.asarray(store[utt], np.float32)
        a, b = torch_model.loglikes(x), onnx_model.loglikes(x)
        worst = max(worst, float(np.abs(a - b).max()))
        if torch_model.decoder.decode_one(utt, a, scale) != onnx_model.decoder.decode_one(utt, b, scale):
            differ.append(utt)
    print(f"AN4 test: {len(store.keys)} utterances, max |onnx - torch| = {worst:.3g}, word differences: {differ}")
    assert worst < 1e-4 and differ == []


def test_eval_package_scores_frames_with_each_backend(pkg, tmp_path):
    """Frame accuracy counts the posterior's argmax (log-likelihood + log prior) against the labels."""
    from asr_kd.deploy.evaluate import evaluate_package
    from asr_kd.deploy.transcribe import TorchBackend
    from asr_kd.nnet.frames import FrameData
    from asr_kd.nnet.models import count_params, load_model as load_net

    model = TorchBackend(pkg)
    feats = np.random.default_rng(3).normal(size=(30, 40)).astype(np.float32)
    data = FrameData(torch.from_numpy(feats), torch.tensor([0, 30]), ["u1"])
    loglikes = model(data.windows(torch.arange(30), 2, 2))
    labels = (loglikes + np.log(np.load(pkg.file("priors.npy")))).argmax(1)
    labels[:10] = (labels[:10] + 1) % model.spec.num_pdfs  # 10 of 30 frames wrong
    write_store(tmp_path / "feats", [("u1", feats)], {"config": pkg.meta["features"], "dim": 40, "frame_shift_ms": 10.0,
                                                      "config_hash": pkg.meta["feature_config_hash"]})
    write_store(tmp_path / "ali", [("u1", labels.astype(np.int32))], {"num_pdfs": model.spec.num_pdfs}, dtype="int32")
    params = count_params(load_net(pkg.file("model.pt"))[0])
    torch_result = evaluate_package(pkg.path, tmp_path / "feats", tmp_path / "ali", backend="torch")
    assert torch_result["frame_acc"] == pytest.approx(20 / 30) and torch_result["num_frames"] == 30
    int8_result = evaluate_package(pkg.path, tmp_path / "feats", tmp_path / "ali", backend="int8")
    assert torch_result["params"] == int8_result["params"] == params
    assert abs(int8_result["frame_acc"] - 20 / 30) <= 0.1

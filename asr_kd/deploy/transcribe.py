"""Transcribe audio files with a model package: audio -> features -> acoustic model -> HCLG -> words.

    model = load_model("pkg")                       # backend "torch" | "int8" | "onnx"
    result = model.transcribe("a.wav")              # Transcript: .words, .starts, .ends
    print(result.text, result.ctm())

Audio is read with soundfile (WAV, FLAC, SPHERE); another sample rate is resampled with soxr to
the model's (a one-line notice); rates below MIN_SAMPLE_RATE are refused (no speech band left to
compute a 16 kHz filterbank from). Features are computed exactly as the training store's were
(`compute_static`, CMVN from the utterance alone, deltas, then rounded to the store's dtype), so
the network sees what it saw in training. Words get start/end times from the decoder's best path:
its transition ids give phone segments (`align.alignment.phone_segments`), which are matched to
the words' pronunciations in the lexicon (Kaldi's lattice-align-words-lexicon, for one path).
"""
from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr_kd.data.audio import audio_info, read_audio
from asr_kd.data.features import add_deltas, compute_static, normalise_utterance
from asr_kd.deploy.package import Package, open_package, read_lexicon
from asr_kd.errors import AsrKdError
from asr_kd.nnet.frames import FrameData

log = logging.getLogger(__name__)

BACKENDS = ("torch", "int8", "onnx")
MIN_SAMPLE_RATE = 8000   # Hz: lower rates are refused rather than resampled
MIN_SECONDS = 0.1        # shorter audio is refused (fewer than ~10 frames of speech)
SILENCE_PEAK = 1.0 / 32768  # peak amplitude below one 16-bit step: silent


@dataclass
class Transcript:
    """One file's result: words with start/end times (seconds), and how long each part took."""

    path: str
    words: list[str]
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    duration: float = 0.0              # seconds of audio
    reached_final: bool = True
    seconds: dict = field(default_factory=dict)  # features, acoustic_model, decode

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def ctm(self, channel: int = 1) -> str:
        """Kaldi CTM lines: `file channel start duration word`."""
        name = Path(self.path).name
        return "".join(f"{name} {channel} {b:.2f} {e - b:.2f} {w}\n" for w, b, e in zip(self.words, self.starts, self.ends))

    def as_dict(self) -> dict:
        return {"file": self.path, "text": self.text, "duration": round(self.duration, 3),
                "words": [{"word": w, "start": round(b, 2), "end": round(e, 2)}
                          for w, b, e in zip(self.words, self.starts, self.ends)],
                "reached_final": self.reached_final, "seconds": {k: round(v, 4) for k, v in self.seconds.items()}}


class Model:
    """A loaded package: features, acoustic model (one backend) and decoder, ready to transcribe."""

    def __init__(self, package: Package | str | os.PathLike, backend: str = "torch"):
        self.package = package if isinstance(package, Package) else open_package(package)
        if backend not in BACKENDS:
            raise AsrKdError(f"backend {backend!r}: expected one of {BACKENDS}")
        self.backend = backend
        self.feature_config = self.package.feature_config
        self.cmvn = self.package.cmvn
        self.storage_dtype = self.package.meta.get("storage_dtype", "float32")
        self.acoustic_model = load_backend(self.package, backend)
        self.left, self.right = self.acoustic_model.left, self.acoustic_model.right
        trained = self.package.meta["cmvn_trained"]["per"]
        if trained != self.cmvn.per:
            log.info("%s: trained with per-%s CMVN; applying per-%s CMN (no speaker statistics at inference)",
                     self.package.path, trained, self.cmvn.per)

    # ---- the three parts, each usable alone (bench_infer times them) ------------------------
    def features(self, path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
        """(frames, dim) normalised features of an audio file, as the training store holds them."""
        samples = self.read(path, channel)
        static = compute_static(samples, self.feature_config)
        feats = add_deltas(normalise_utterance(static, self.cmvn), self.feature_config.deltas,
                           self.feature_config.delta_window)
        return feats.astype(self.storage_dtype).astype(np.float32)

    def read(self, path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
        """Mono samples at the model's rate; bad audio raises an AsrKdError naming the file."""
        rate = self.feature_config.sample_rate
        info = audio_info(path)
        if info.channels > 1 and channel is None:
            raise AsrKdError(f"{path}: audio has {info.channels} channels; choose one with --channel 0..{info.channels - 1}")
        if info.sample_rate < MIN_SAMPLE_RATE:
            raise AsrKdError(f"{path}: sample rate {info.sample_rate} Hz cannot be resampled to {rate} Hz for this "
                             f"model (lowest accepted: {MIN_SAMPLE_RATE} Hz)")
        if info.sample_rate != rate:
            log.info("%s: resampling %d Hz -> %d Hz", path, info.sample_rate, rate)
        samples = read_audio(path, expected_rate=rate, resample=True, channel=channel)
        if len(samples) < MIN_SECONDS * rate:
            raise AsrKdError(f"{path}: {len(samples) / rate:.3f} s of audio is too short (at least {MIN_SECONDS} s)")
        if np.max(np.abs(samples)) < SILENCE_PEAK:
            raise AsrKdError(f"{path}: audio is silent (every sample is zero at 16-bit resolution)")
        return samples

    def loglikes(self, feats: np.ndarray) -> np.ndarray:
        """(frames, num_pdfs) log-likelihoods of one utterance's features."""
        data = FrameData(torch.from_numpy(np.ascontiguousarray(feats)), torch.tensor([0, len(feats)]), ["utt"])
        windows = data.windows(torch.arange(len(feats)), self.left, self.right)
        return self.acoustic_model(windows)

    @functools.cached_property
    def decoder(self):
        from asr_kd.decode.decoder import Decoder

        d = self.package.decode
        return Decoder(self.package.file("graph"), self.package.file("hmm/final.mdl"), beam=d["beam"],
                       lattice_beam=d["lattice_beam"], max_active=d["max_active"], word_penalty=d["word_penalty"])

    @functools.cached_property
    def _aligner(self) -> "WordAligner":
        return WordAligner(self.package, self.decoder)

    def transcribe(self, path: str | os.PathLike, channel: int | None = None) -> Transcript:
        """Words and their times for one audio file."""
        t0 = time.perf_counter()
        feats = self.features(path, channel)
        t1 = time.perf_counter()
        loglikes = self.loglikes(feats)
        t2 = time.perf_counter()
        words, tids, ok = self.decoder.decode_with_alignment(str(path), loglikes, self.package.decode["acoustic_scale"])
        t3 = time.perf_counter()
        starts, ends = self._aligner.word_times(words, tids, str(path))
        shift = self.feature_config.frame_shift_ms / 1000.0
        return Transcript(str(path), words, starts, ends, duration=len(feats) * shift, reached_final=ok,
                          seconds={"features": t1 - t0, "acoustic_model": t2 - t1, "decode": t3 - t2})


def load_model(package: str | os.PathLike, backend: str = "torch") -> Model:
    """The package at `package`, verified and loaded (see `Model`)."""
    return Model(package, backend)


# ---------------------------------------------------------------- acoustic model backends

class TorchBackend:
    """The fp32 network (or its int8 dynamic quantisation) from model.pt + priors.npy."""

    def __init__(self, pkg: Package, int8: bool = False):
        from asr_kd.deploy.export import acoustic_model, quantize_int8

        am, spec = acoustic_model(pkg.file("model.pt"), pkg.file("priors.npy"))
        self.module = quantize_int8(am) if int8 else am
        self.left, self.right = spec.left_context, spec.right_context
        self.spec = spec

    @torch.no_grad()
    def __call__(self, windows: torch.Tensor) -> np.ndarray:
        return self.module(windows.float()).numpy()


class OnnxBackend:
    """am.onnx in an onnxruntime session (the `onnx` extra)."""

    def __init__(self, pkg: Package, threads: int | None = None):
        if not pkg.has_onnx:
            raise AsrKdError(f"{pkg.path}: the package has no am.onnx (install asr_kd[onnx] and re-make it)")
        try:
            import onnxruntime as ort
        except ImportError:
            raise AsrKdError("backend 'onnx' needs onnxruntime: pip install 'asr_kd[onnx]'") from None
        from asr_kd.nnet.models import load_model as load_net

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(pkg.file("am.onnx")), options, providers=["CPUExecutionProvider"])
        _, spec = load_net(pkg.file("model.pt"))
        self.left, self.right = spec.left_context, spec.right_context
        self.spec = spec

    def __call__(self, windows: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {"windows": windows.float().numpy()})[0]


def load_backend(pkg: Package, backend: str):
    if backend == "onnx":
        return OnnxBackend(pkg)
    return TorchBackend(pkg, int8=backend == "int8")


# ---------------------------------------------------------------- word times

class WordAligner:
    """Word start/end times of a best path: its phones matched to the words' pronunciations."""

    def __init__(self, pkg: Package, decoder):
        from asr_kd.kaldi.gmm import read_tree
        from asr_kd.kaldi.transitions import TransitionTable
        from asr_kd.lang.prepare_lang import read_symbol_table

        self.table = TransitionTable(decoder.trans_model, read_tree(pkg.file("hmm/tree")))
        self.prons, self.silence = read_lexicon(pkg)
        self.id2phone = {i: p for p, i in read_symbol_table(pkg.file("graph/phones.txt")).items()}
        self.shift = pkg.feature_config.frame_shift_ms / 1000.0

    def word_times(self, words: list[str], tids: np.ndarray, label: str) -> tuple[list[float], list[float]]:
        from asr_kd.align.alignment import labels_from_tids, phone_segments

        if not words:
            return [], []
        labels = labels_from_tids(np.asarray(tids), self.table)
        segments = [(self.id2phone[p], b, n) for p, b, n in phone_segments(labels["phones"], labels["starts"])]
        spans = match_words(words, segments, self.prons, self.silence)
        if spans is None:
            raise AsrKdError(f"{label}: the best path's phones do not spell the decoded words with this lexicon "
                             "(lexicon and graph from different lang dirs?)")
        return [b * self.shift for b, _ in spans], [e * self.shift for _, e in spans]


def match_words(words: list[str], segments: list[tuple[str, int, int]], prons: dict[str, list[tuple[str, ...]]],
                silence: set[str]) -> list[tuple[int, int]] | None:
    """(first frame, end frame) of each word: segments split into consecutive pronunciations of
    `words`, silence segments allowed between words. Depth-first over pronunciations; None if no
    split exists."""
    phones = [p for p, _, _ in segments]

    def skip_silence(i: int) -> int:
        while i < len(segments) and phones[i] in silence:
            i += 1
        return i

    def search(w: int, i: int) -> list[tuple[int, int]] | None:
        if w == len(words):
            return [] if skip_silence(i) == len(segments) else None
        for pron in sorted(prons.get(words[w], []), key=len, reverse=True):
            for start in dict.fromkeys((i, skip_silence(i))):
                end = start + len(pron)
                if tuple(phones[start:end]) == pron:
                    rest = search(w + 1, end)
                    if rest is not None:
                        last = segments[end - 1]
                        return [(segments[start][1], last[1] + last[2])] + rest
        return None

    return search(0, 0)

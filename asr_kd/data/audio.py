"""Audio for a data dir: files soundfile reads (WAV, FLAC, NIST SPHERE), Kaldi pipe commands, segments,
and Kaldi's speed-perturbed entries (`sox ... speed F |`, done here with soxr).

Everything comes back as float32 mono samples in [-1, 1) at the rate the caller expects; a file
at another rate is an error unless resampling is asked for, so a corpus at 8 kHz never flows
silently into a 16 kHz feature pipeline. Errors name the utterance and the file.
"""
from __future__ import annotations

import io
import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from asr_kd.data.datadir import DataDir, load_datadir, write_table
from asr_kd.errors import AsrKdError

log = logging.getLogger(__name__)

MAX_OVERSHOOT_S = 0.5  # a segment may end this far past its recording (Kaldi: extract-segments --max-overshoot)


def describe(source: str, utt: str | None) -> str:
    return f"utterance '{utt}' ({source})" if utt is not None else str(source)


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_samples: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


def audio_info(path: str | os.PathLike, utt: str | None = None) -> AudioInfo:
    """Rate, length and channels from the header only (no decoding): fast enough for utt2dur."""
    path = check_exists(path, utt)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AsrKdError(f"{describe(path, utt)}: cannot read audio: {e}") from None
    return AudioInfo(info.samplerate, info.frames, info.channels)


def check_exists(path: str | os.PathLike, utt: str | None) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AsrKdError(f"{describe(path, utt)}: audio file not found")
    return path


def read_audio(path: str | os.PathLike, expected_rate: int | None = 16000, resample: bool = False,
               utt: str | None = None, channel: int | None = None,
               start: float = 0.0, end: float = -1) -> np.ndarray:
    """Samples of an audio file (or the [start, end) seconds of it; end -1 = to the end)."""
    path = check_exists(path, utt)
    label = describe(path, utt)
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            first, last = segment_bounds(start, end, rate, f.frames, label)
            f.seek(first)
            samples = f.read(last - first, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AsrKdError(f"{label}: cannot read audio: {e}") from None
    return finish(samples, rate, label, expected_rate, resample, channel)


def decode_bytes(data: bytes, label: str) -> tuple[np.ndarray, int]:
    """(samples x channels, rate) of an in-memory file, e.g. the stdout of a wav.scp pipe command."""
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AsrKdError(f"{label}: cannot read audio from the command's output: {e}") from None
    return samples, rate


def segment_bounds(start: float, end: float, rate: int, num_samples: int, label: str) -> tuple[int, int]:
    """Sample range of [start, end) seconds; like Kaldi's extract-segments, up to 0.5 s past the end is cut off."""
    if num_samples == 0:
        raise AsrKdError(f"{label}: audio has no samples (zero length)")
    first = int(round(start * rate))
    last = num_samples if end == -1 else int(round(end * rate))
    if last > num_samples + int(MAX_OVERSHOOT_S * rate) or first >= num_samples:
        raise AsrKdError(f"{label}: segment {start}..{end} s is beyond the audio ({num_samples / rate:.3f} s)")
    return first, min(last, num_samples)


def finish(samples: np.ndarray, rate: int, label: str, expected_rate: int | None, resample: bool,
           channel: int | None) -> np.ndarray:
    """(samples, channels) -> checked mono float32 at the expected rate."""
    mono = pick_channel(samples, label, channel)
    if mono.size == 0:
        raise AsrKdError(f"{label}: audio has no samples (zero length)")
    if expected_rate is not None and rate != expected_rate:
        if not resample:
            raise AsrKdError(f"{label}: sample rate {rate} Hz, expected {expected_rate} Hz; to resample it, "
                             f"set `resample: true` in the compute-features config (or --set resample=true; in a "
                             f"recipe, in its --mfcc-conf and --fbank-conf files), or `sample_rate: {rate}` to "
                             f"compute features at {rate} Hz")
        mono = soxr.resample(mono, rate, expected_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)


def pick_channel(samples: np.ndarray, label: str, channel: int | None) -> np.ndarray:
    channels = samples.shape[1]
    if channel is None:
        if channels != 1:
            raise AsrKdError(f"{label}: audio has {channels} channels; choose one with `channel: 0` "
                             f"(0..{channels - 1}) in the compute-features config (or --set channel=0)")
        return samples[:, 0]
    if not 0 <= channel < channels:
        raise AsrKdError(f"{label}: channel {channel} asked for, audio has {channels}")
    return samples[:, channel]


# ---------------------------------------------------------------- data dir entries

def is_pipe(entry: str) -> bool:
    return entry.rstrip().endswith("|")


def run_pipe(entry: str, label: str) -> bytes:
    """Run a Kaldi wav.scp command (`sph2pipe -f wav x.sph |`) with bash and return its stdout."""
    command = entry.rstrip()[:-1]
    try:
        result = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, check=False)
    except OSError as e:
        raise AsrKdError(f"{label}: cannot run command: {e}") from None
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise AsrKdError(f"{label}: command failed with exit code {result.returncode}: {' / '.join(stderr)}")
    return result.stdout


def check_plain_path(entry: str, label: str) -> str:
    if len(entry.split()) != 1:
        raise AsrKdError(f"{label}: wav.scp entry is neither one path nor a command ending in '|'")
    if ".ark:" in entry:
        raise AsrKdError(f"{label}: wav.scp entries pointing into Kaldi archives are not supported")
    return entry


def load_utterance(datadir: DataDir | str | os.PathLike, utt: str, expected_rate: int | None = 16000,
                   resample: bool = False, channel: int | None = None) -> np.ndarray:
    """Samples of one utterance of a data dir: a path or a pipe in wav.scp, cut by `segments` if present.

    Relative paths in wav.scp are relative to the current directory, as in Kaldi.
    """
    data = datadir if isinstance(datadir, DataDir) else load_datadir(datadir)
    if utt not in data.utt2spk:
        raise AsrKdError(f"{data.path}: no utterance '{utt}'")
    recording = data.recording_of(utt)
    seg = data.segments[utt] if data.segments is not None else None
    start, end = (seg.start, seg.end) if seg else (0.0, -1)
    entry = data.wav_scp[recording]
    label = describe(entry, utt)
    if not is_pipe(entry):
        return read_audio(check_plain_path(entry, label), expected_rate, resample, utt, channel, start, end)
    samples, rate = read_recording(entry, label)
    first, last = segment_bounds(start, end, rate, len(samples), label)
    return finish(samples[first:last], rate, label, expected_rate, resample, channel)


def read_recording(entry: str, label: str) -> tuple[np.ndarray, int]:
    """(samples x channels, rate) of a whole wav.scp entry: a path, a pipe, or a speed-perturbed entry."""
    speed = parse_speed_entry(entry)
    if speed is not None:
        inner, factor = speed
        samples, rate = read_recording(inner, label)
        return change_speed(samples, rate, factor), rate
    if is_pipe(entry):
        return decode_bytes(run_pipe(entry, label), label)
    path = check_exists(check_plain_path(entry, label), None)
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AsrKdError(f"{label}: cannot read audio: {e}") from None
    return samples, rate


# ---------------------------------------------------------------- truncated files

WAV_SIZE_PLACEHOLDERS = (0, 0xFFFFFFFF)  # streaming writers leave these when the size is unknown


def wav_truncation(path: str | os.PathLike) -> tuple[int, int] | None:
    """(bytes the WAV header declares for its data chunk, bytes present) if the file is shorter, else None.

    libsndfile quietly reads what is there, so a WAV cut short (an interrupted copy or download)
    gives fewer frames without a word; Kaldi's WaveData::Read warns "Truncated file?". Only RIFF
    WAVE headers are checked: the chunk walk below is the 20 lines of the format that matter here.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(f.fileno()).st_size
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if chunk_id == b"data":
                    present = size - f.tell()
                    if chunk_size in WAV_SIZE_PLACEHOLDERS or chunk_size <= present:
                        return None
                    return chunk_size, present
                f.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)
    except OSError:
        return None  # unreadable files are reported by the reader itself


def truncation_warning(data: DataDir, utt: str) -> str | None:
    """A one-line warning if the utterance's plain WAV file is truncated (pipes cannot be checked).

    A warning, not an error, as in Kaldi: the samples present are real audio and a corpus may hold a
    few such files; the warning names the utterance and file, and compute-features lists them in the
    store's meta.json ("warnings") so they can be dropped or re-fetched."""
    entry = data.wav_scp.get(data.recording_of(utt), "")
    if not entry or is_pipe(entry) or len(entry.split()) != 1:
        return None
    found = wav_truncation(entry)
    if found is None:
        return None
    declared, present = found
    return (f"{describe(entry, utt)}: WAV header declares {declared} data bytes, the file holds {present} "
            f"(truncated file? re-copy it, or drop the utterance)")


# ---------------------------------------------------------------- speed perturbation

# Kaldi's perturb_data_dir_speed.sh writes `sox PATH -t wav - speed F |` (or `CMD | sox -t wav - -t wav -
# speed F |` after a pipe). Those entries are recognised here and done in-process with soxr,
# so a speed-perturbed data dir is one Kaldi also reads, and neither sox nor a shell is needed.
SPEED_TAIL = re.compile(r"\s*sox (?:-t wav )?(?P<src>\S+) -t wav - speed (?P<factor>\d*\.?\d+) \|$")


def speed_entry(entry: str, factor: float) -> str:
    """The wav.scp entry playing `entry` at `factor` times its speed (Kaldi's form)."""
    if is_pipe(entry):
        return f"{entry.rstrip()} sox -t wav - -t wav - speed {factor:g} |"
    return f"sox {entry} -t wav - speed {factor:g} |"


def parse_speed_entry(entry: str) -> tuple[str, float] | None:
    """(inner entry, factor) of a speed-perturbed entry made by `speed_entry` (or Kaldi); else None."""
    match = SPEED_TAIL.search(entry.rstrip())
    if match is None:
        return None
    head = entry[:match.start()].strip()
    if match["src"] == "-":
        inner = head if head.endswith("|") else None
    else:
        inner = match["src"] if not head else None
    factor = float(match["factor"])
    return (inner, factor) if inner is not None and factor > 0 else None


def change_speed(samples: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """sox `speed F`: tempo and pitch scaled by F, i.e. the samples resampled from rate*F to rate (soxr HQ)."""
    if factor == 1.0:
        return samples
    return soxr.resample(samples, rate * factor, rate, quality="HQ").astype(np.float32, copy=False)


# ---------------------------------------------------------------- durations

def utterance_duration(data: DataDir, utt: str) -> float:
    """Seconds of one utterance: from the segment, else the file header; pipes must be run and decoded."""
    seg = data.segments[utt] if data.segments is not None else None
    if seg is not None and seg.end != -1:
        return seg.end - seg.start
    entry = data.wav_scp[data.recording_of(utt)]
    return recording_duration(entry, describe(entry, utt), utt) - (seg.start if seg is not None else 0.0)


def recording_duration(entry: str, label: str, utt: str | None) -> float:
    """Seconds of a whole wav.scp entry: the header for a file, the scaled inner length for a speed entry."""
    speed = parse_speed_entry(entry)
    if speed is not None:
        return recording_duration(speed[0], label, utt) / speed[1]
    if is_pipe(entry):
        samples, rate = decode_bytes(run_pipe(entry, label), label)
        return len(samples) / rate
    return audio_info(check_plain_path(entry, label), utt).duration


def compute_utt2dur(datadir: DataDir | str | os.PathLike) -> dict[str, float]:
    data = datadir if isinstance(datadir, DataDir) else load_datadir(datadir)
    return {utt: utterance_duration(data, utt)
            for utt in tqdm(data.utt_ids, desc=f"utt2dur {data.path}", disable=len(data) < 1000)}


def write_utt2dur(datadir: str | os.PathLike) -> dict[str, float]:
    """Write `utt2dur` into a data dir (atomically) and return it."""
    data = load_datadir(datadir)
    durations = compute_utt2dur(data)
    write_table(data.path / "utt2dur", durations)
    log.info("%s: %d utterances, %.2f hours", data.path / "utt2dur", len(durations), sum(durations.values()) / 3600)
    return durations

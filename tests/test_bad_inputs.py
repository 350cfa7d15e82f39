"""The bad-input suite (issue 15): every bad input or fault ends in ONE line naming the culprit.

Each case builds a tiny bad input from the module's `world` (a 3-utterance data dir with its
feature store, a dict dir, synthetic feature/alignment stores and a tiny trained model), runs the
command in-process through the CLI's `main` (a subprocess only for the recipes and a real kill),
and asserts: a non-zero exit, no traceback, exactly one `error:` line that contains the culprit
(file, line, utterance or option) and the hint, and that outputs written before are byte-identical
afterwards. A few cases check that what used to fail now works (YAML `1e-3`, a hint followed as
written, a truncated WAV warned about and listed).
"""
from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_kd.cli import main
from asr_kd.config import load_config
from asr_kd.errors import AsrKdError
from nnet_synth import make_sets

REPO = Path(__file__).resolve().parents[1]
RATE = 16000
UTTS = {"spk1-u1": "YES NO", "spk1-u2": "NO", "spk2-u1": "YES YES"}
TINY_TRAIN = ["--set", "max_epochs=1", "--set", "model.hidden_dim=8", "--set", "model.hidden_layers=1",
              "--set", "batch_size=32", "--set", "device=cpu"]


# ---------------------------------------------------------------- the shared good inputs

@dataclass
class World:
    root: Path
    data: Path     # data dir: wav.scp, utt2spk, spk2utt, text
    feats: Path    # compute-features output of `data`
    dict: Path     # dict dir for prepare-lang
    train: tuple[Path, Path]   # synthetic (features, alignment) stores, 4 pdfs
    dev: tuple[Path, Path]
    model: Path    # a trained tiny model dir (final.pt, checkpoints/)


def write_wav(path: Path, seconds: float = 0.5, rate: int = RATE, channels: int = 1, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    samples = (rng.normal(scale=0.1, size=(int(seconds * rate), channels))).clip(-1, 1)
    sf.write(str(path), samples if channels > 1 else samples[:, 0], rate, subtype="PCM_16")
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def make_datadir(root: Path, wavs: dict[str, Path]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_lines(root / "wav.scp", [f"{u} {wavs[u]}" for u in sorted(wavs)])
    write_lines(root / "utt2spk", [f"{u} {u.split('-')[0]}" for u in sorted(wavs)])
    spk2utt: dict[str, list[str]] = {}
    for u in sorted(wavs):
        spk2utt.setdefault(u.split("-")[0], []).append(u)
    write_lines(root / "spk2utt", [f"{s} {' '.join(us)}" for s, us in sorted(spk2utt.items())])
    write_lines(root / "text", [f"{u} {UTTS.get(u, 'YES')}" for u in sorted(wavs)])
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    (root / "wav").mkdir()
    wavs = {u: write_wav(root / "wav" / f"{u}.wav", seed=i) for i, u in enumerate(UTTS)}
    data = make_datadir(root / "data", wavs)
    assert main(["compute-features", "--nj", "1", str(data), str(root / "feats")]) == 0
    d = root / "dict"
    d.mkdir()
    write_lines(d / "silence_phones.txt", ["SIL"])
    write_lines(d / "nonsilence_phones.txt", ["Y", "N"])
    write_lines(d / "optional_silence.txt", ["SIL"])
    write_lines(d / "lexicon.txt", ["<SIL> SIL", "NO N", "YES Y"])
    train = make_sets(root, num_utts=8, max_len=20, name="train")
    dev = make_sets(root, num_utts=4, max_len=20, name="dev", seed=1)
    assert main(["train", *map(str, train), *map(str, dev), str(root / "model"), *TINY_TRAIN]) == 0
    return World(root, data, root / "feats", d, train, dev, root / "model")


# ---------------------------------------------------------------- helpers

def snapshot(*paths: Path) -> dict[str, bytes]:
    """Every file under `paths` (hidden temp dirs excluded) -> its bytes."""
    files = {}
    for path in paths:
        for f in ([path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []):
            if f.is_file():
                files[str(f)] = f.read_bytes()
    return files


def temp_leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def expect_error(capsys, argv: list, *needles: str, protected: tuple[Path, ...] = (), rc: int | None = None) -> str:
    """Run `argv`; assert one error line containing every needle, no traceback, protected bytes kept."""
    before = snapshot(*protected)
    code, _, err = run(argv, capsys)
    assert code != 0 and (rc is None or code == rc), (code, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert snapshot(*protected) == before, "an output written before was changed"
    return lines[0]


def expect_raises(call, *needles: str) -> str:
    with pytest.raises(AsrKdError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def bad_data(tmp: Path, w: World) -> Path:
    return copy(w.data, tmp / "d")


def feats_copy(tmp: Path, w: World) -> Path:
    return copy(w.feats, tmp / "feats")


def dict_copy(tmp: Path, w: World) -> Path:
    return copy(w.dict, tmp / "dict")


def yaml_file(tmp: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def train_argv(w: World, out: Path, *extra) -> list:
    return ["train", *w.train, *w.dev, out, *TINY_TRAIN, *extra]


def killed(w: World, m: Path, *extra) -> None:
    """Make `m` look like a run of `train_argv(w, m, *extra)` killed after its checkpoints: the step
    record holds that command's fingerprint, unfinished (so the command resumes from the checkpoints)."""
    from asr_kd.cli import build_parser
    from asr_kd.config import to_dict
    from asr_kd.nnet.commands import TRAIN_INPUTS, _config
    from asr_kd.steps.outputs import command_fingerprint

    args = build_parser().parse_args([str(a) for a in train_argv(w, m, *extra)])
    fp = command_fingerprint(args, inputs=TRAIN_INPUTS, output="exp_dir", config=to_dict(_config(args)))
    (m / "step.json").write_text(json.dumps({"fingerprint": fp, "finished": False, "time": 0}))


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


# ---------------------------------------------------------------- data dirs

@case
def data_text_not_utf8(tmp, w, capsys):
    d = bad_data(tmp, w)
    (d / "text").write_bytes(b"spk1-u1 YES\nspk1-u2 N\xffO\nspk2-u1 YES\n")
    expect_error(capsys, ["validate-data-dir", d], f"{d}/text:2: not UTF-8")


@case
def data_text_bom(tmp, w, capsys):
    d = bad_data(tmp, w)
    (d / "text").write_bytes(b"\xef\xbb\xbf" + (d / "text").read_bytes())
    expect_error(capsys, ["validate-data-dir", d], f"{d}/text:1", "byte order mark", "fix-data-dir")


@case
def data_bom_fixed_by_the_hint(tmp, w, capsys):
    d = bad_data(tmp, w)
    (d / "text").write_bytes(b"\xef\xbb\xbf" + (d / "text").read_bytes())
    assert run(["fix-data-dir", d], capsys)[0] == 0
    assert run(["validate-data-dir", d], capsys)[0] == 0
    assert (d / ".backup" / "text").read_bytes().startswith(b"\xef\xbb\xbf")


@case
def data_unsorted(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "utt2spk", ["spk1-u2 spk1", "spk1-u1 spk1", "spk2-u1 spk2"])
    expect_error(capsys, ["validate-data-dir", d], f"{d}/utt2spk:2", "out of order")


@case
def data_duplicate_key(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "text", ["spk1-u1 YES", "spk1-u1 YES", "spk1-u2 NO", "spk2-u1 YES"])
    expect_error(capsys, ["validate-data-dir", d], f"{d}/text:2", "duplicate utterance id 'spk1-u1'")


@case
def data_crlf(tmp, w, capsys):
    d = bad_data(tmp, w)
    (d / "wav.scp").write_bytes((d / "wav.scp").read_bytes().replace(b"\n", b"\r\n"))
    expect_error(capsys, ["validate-data-dir", d], f"{d}/wav.scp:1", "dos2unix")


@case
def data_empty_transcript(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "text", ["spk1-u1 YES", "spk1-u2", "spk2-u1 YES"])
    expect_error(capsys, ["validate-data-dir", d], f"{d}/text:2", "empty transcript", "spk1-u2")


@case
def data_missing_utt2spk(tmp, w, capsys):
    d = bad_data(tmp, w)
    (d / "utt2spk").unlink()
    expect_error(capsys, ["validate-data-dir", d], f"{d}/utt2spk: file not found")


@case
def data_key_sets_differ(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "text", ["spk1-u1 YES", "spk2-u1 YES"])
    expect_error(capsys, ["validate-data-dir", d], f"{d}/text", "missing (first: 'spk1-u2')")


@case
def data_segments_fields(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "segments", ["spk1-u1 spk1-u1 0.0", "spk1-u2 spk1-u2 0 0.3", "spk2-u1 spk2-u1 0 0.3"])
    expect_error(capsys, ["validate-data-dir", d], f"{d}/segments:1", "spk1-u1")


@case
def data_segments_times(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "segments", ["spk1-u1 spk1-u1 0.5 0.2", "spk1-u2 spk1-u2 0 0.3", "spk2-u1 spk2-u1 0 0.3"])
    expect_error(capsys, ["validate-data-dir", d], f"{d}/segments:1", "bad times")


@case
def data_segments_unknown_recording(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "segments", ["spk1-u1 rec9 0 0.2", "spk1-u2 spk1-u2 0 0.3", "spk2-u1 spk2-u1 0 0.3"])
    expect_error(capsys, ["validate-data-dir", d], "rec9", "spk1-u1")


@case
def data_utt2dur_not_number(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "utt2dur", ["spk1-u1 0.5", "spk1-u2 half", "spk2-u1 0.5"])
    expect_error(capsys, ["validate-data-dir", d], f"{d}/utt2dur:2", "'half'")


@case
def data_spk2utt_disagrees(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "spk2utt", ["spk1 spk1-u1", "spk2 spk2-u1"])
    expect_error(capsys, ["validate-data-dir", d], f"{d}/spk2utt:1", "spk1")


@case
def data_speaker_grouping(tmp, w, capsys):
    d = bad_data(tmp, w)
    write_lines(d / "utt2spk", ["spk1-u1 b", "spk1-u2 a", "spk2-u1 b"])
    expect_error(capsys, ["validate-data-dir", d], f"{d}/utt2spk:2", "grouped by speaker")


@case
def data_whitespace_line(tmp, w, capsys):
    d = bad_data(tmp, w)
    (d / "text").write_text("spk1-u1 YES\n   \nspk1-u2 NO\nspk2-u1 YES\n", encoding="utf-8")
    expect_error(capsys, ["validate-data-dir", d], f"{d}/text:2", "only whitespace")


@case
def data_dir_missing(tmp, w, capsys):
    expect_error(capsys, ["validate-data-dir", tmp / "nope"], f"{tmp / 'nope'}: data dir not found")


@case
def fix_keeps_backup_and_reports_conflicts(tmp, w, capsys):
    d = bad_data(tmp, w)
    original = b"spk1-u2 NO\nspk1-u1 YES NO\nspk1-u1 YES\nspk2-u1 YES\n"
    (d / "text").write_bytes(original)
    code, out, _ = run(["fix-data-dir", d], capsys)
    assert code == 0 and "text (conflicting duplicates, first kept): dropped 1 (first: spk1-u1)" in out
    assert (d / ".backup" / "text").read_bytes() == original
    assert (d / "text").read_text().splitlines()[0] == "spk1-u1 YES NO"


@case
def fix_missing_wav_scp(tmp, w, capsys):
    d = bad_data(tmp, w)
    (d / "wav.scp").unlink()
    expect_error(capsys, ["fix-data-dir", d], f"{d}/wav.scp: file not found", protected=(d,))


@case
def fix_disk_full_keeps_backup(tmp, w, capsys, monkeypatch):
    d = bad_data(tmp, w)
    write_lines(d / "text", ["spk1-u2 NO", "spk1-u1 YES", "spk2-u1 YES"])
    original = snapshot(d)
    import asr_kd.data.datadir as datadir

    def full(path, mapping):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(datadir, "write_table", full)
    expect_error(capsys, ["fix-data-dir", d], "no space left on device", f"{d}/utt2spk", "intact")
    assert snapshot(d / ".backup") == {k.replace(str(d), str(d / ".backup")): v for k, v in original.items()}


@case
def subset_first_zero(tmp, w, capsys):
    expect_error(capsys, ["subset-data-dir", w.data, tmp / "s", "--first", "0"], "--first", "must be >= 1", rc=2)
    assert not (tmp / "s").exists()


@case
def subset_unknown_utts(tmp, w, capsys):
    ids = write_lines(tmp / "ids", ["spk9-u9"])
    expect_error(capsys, ["subset-data-dir", w.data, tmp / "s", "--utts", ids], "'spk9-u9'")


@case
def split_bad_fraction(tmp, w, capsys):
    expect_error(capsys, ["split-data-dir", w.data, tmp / "a", tmp / "b", "--fraction", "1.5"], "fraction", "1.5")


# ---------------------------------------------------------------- dictionaries and LM text

@case
def lexicon_not_utf8(tmp, w, capsys):
    d = dict_copy(tmp, w)
    (d / "lexicon.txt").write_bytes(b"<SIL> SIL\nN\xe9O N\nYES Y\n")
    expect_error(capsys, ["prepare-lang", d, tmp / "lang"], f"{d}/lexicon.txt:2: not UTF-8")


@case
def lexicon_one_field(tmp, w, capsys):
    d = dict_copy(tmp, w)
    write_lines(d / "lexicon.txt", ["<SIL> SIL", "NO", "YES Y"])
    expect_error(capsys, ["prepare-lang", d, tmp / "lang"], f"{d}/lexicon.txt:2", "expected 'word phone")


@case
def lexicon_unknown_phone(tmp, w, capsys):
    d = dict_copy(tmp, w)
    write_lines(d / "lexicon.txt", ["<SIL> SIL", "NO N OW", "YES Y"])
    expect_error(capsys, ["prepare-lang", d, tmp / "lang"], f"{d}/lexicon.txt:2", "OW")


@case
def lexicon_reserved_word(tmp, w, capsys):
    d = dict_copy(tmp, w)
    write_lines(d / "lexicon.txt", ["<SIL> SIL", "#0 N", "YES Y"])
    expect_error(capsys, ["prepare-lang", d, tmp / "lang"], f"{d}/lexicon.txt:2", "reserved")


@case
def lexicon_empty(tmp, w, capsys):
    d = dict_copy(tmp, w)
    (d / "lexicon.txt").write_text("", encoding="utf-8")
    expect_error(capsys, ["prepare-lang", d, tmp / "lang"], f"{d}/lexicon.txt: empty lexicon")


@case
def phones_file_missing(tmp, w, capsys):
    d = dict_copy(tmp, w)
    (d / "silence_phones.txt").unlink()
    expect_error(capsys, ["prepare-lang", d, tmp / "lang"], f"{d}/silence_phones.txt", "missing from the dict dir")


@case
def phones_file_not_utf8(tmp, w, capsys):
    d = dict_copy(tmp, w)
    (d / "nonsilence_phones.txt").write_bytes(b"Y\n\xff\n")
    expect_error(capsys, ["prepare-lang", d, tmp / "lang"], f"{d}/nonsilence_phones.txt:2: not UTF-8")


@case
def phone_declared_twice(tmp, w, capsys):
    d = dict_copy(tmp, w)
    write_lines(d / "nonsilence_phones.txt", ["Y", "N", "Y"])
    expect_error(capsys, ["prepare-lang", d, tmp / "lang"], "declared more than once", "Y")


@case
def train_lm_given_a_dir(tmp, w, capsys):
    expect_error(capsys, ["train-lm", w.data, tmp / "lm.arpa"], f"{w.data}: is a directory")


@case
def train_lm_text_not_utf8(tmp, w, capsys):
    text = tmp / "text"
    text.write_bytes(b"u1 YES\nu2 \xffNO\n")
    expect_error(capsys, ["train-lm", text, tmp / "lm.arpa"], f"{text}:2: not UTF-8")


@case
def train_lm_order_zero(tmp, w, capsys):
    expect_error(capsys, ["train-lm", "--order", "0", w.data / "text", tmp / "lm.arpa"], "--order must be >= 1")


# ---------------------------------------------------------------- audio

def audio_dir(tmp: Path, w: World, utt: str, entry: str) -> Path:
    d = bad_data(tmp, w)
    lines = (d / "wav.scp").read_text().splitlines()
    write_lines(d / "wav.scp", [f"{utt} {entry}" if line.split()[0] == utt else line for line in lines])
    return d


def features_argv(d: Path, out: Path, *extra) -> list:
    return ["compute-features", "--nj", "1", d, out, *extra]


@case
def audio_missing_file(tmp, w, capsys):
    d = audio_dir(tmp, w, "spk1-u2", str(tmp / "gone.wav"))
    out = feats_copy(tmp, w)  # an older store replaced with --overwrite: kept whole when the new run fails
    expect_error(capsys, features_argv(d, out, "--overwrite"), "'spk1-u2'", "gone.wav", "not found", protected=(out,))
    assert temp_leftovers(tmp) == []


@case
def audio_8khz_and_its_hint(tmp, w, capsys):
    d = audio_dir(tmp, w, "spk1-u1", str(write_wav(tmp / "r8.wav", rate=8000)))
    out = feats_copy(tmp, w)
    expect_error(capsys, features_argv(d, out, "--overwrite"), "'spk1-u1'", "8000 Hz", "--set resample=true",
                 protected=(out,))
    assert run(features_argv(d, tmp / "f2", "--set", "resample=true"), capsys)[0] == 0  # the hint, as written


@case
def audio_stereo_and_its_hint(tmp, w, capsys):
    d = audio_dir(tmp, w, "spk2-u1", str(write_wav(tmp / "st.wav", channels=2)))
    expect_error(capsys, features_argv(d, tmp / "f"), "'spk2-u1'", "2 channels", "--set channel=0")
    assert run(features_argv(d, tmp / "f", "--set", "channel=0"), capsys)[0] == 0  # the hint, as written


@case
def audio_zero_length(tmp, w, capsys):
    empty = tmp / "empty.wav"
    sf.write(str(empty), np.zeros(0), RATE, subtype="PCM_16")
    d = audio_dir(tmp, w, "spk1-u1", str(empty))
    expect_error(capsys, features_argv(d, tmp / "f"), "'spk1-u1'", "no samples")


@case
def audio_not_audio(tmp, w, capsys):
    junk = tmp / "junk.wav"
    junk.write_bytes(b"this is not a wav file at all" * 10)
    d = audio_dir(tmp, w, "spk1-u1", str(junk))
    expect_error(capsys, features_argv(d, tmp / "f"), "'spk1-u1'", "cannot read audio")


@case
def audio_shorter_than_a_frame(tmp, w, capsys):
    d = audio_dir(tmp, w, "spk1-u2", str(write_wav(tmp / "short.wav", seconds=0.01)))
    expect_error(capsys, features_argv(d, tmp / "f"), "'spk1-u2'", "shorter than one frame")


@case
def audio_pipe_fails(tmp, w, capsys):
    d = audio_dir(tmp, w, "spk1-u1", "false |")
    expect_error(capsys, features_argv(d, tmp / "f"), "'spk1-u1'", "command failed")


@case
def audio_entry_two_paths(tmp, w, capsys):
    d = audio_dir(tmp, w, "spk1-u1", "a.wav b.wav")
    expect_error(capsys, features_argv(d, tmp / "f"), "'spk1-u1'", "neither one path nor a command")


@case
def audio_truncated_is_warned_and_listed(tmp, w, capsys, caplog):
    full = write_wav(tmp / "full.wav", seconds=0.5)
    cut = tmp / "cut.wav"
    cut.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    d = audio_dir(tmp, w, "spk1-u1", str(cut))
    assert run(features_argv(d, tmp / "f"), capsys)[0] == 0  # a warning, as Kaldi's "Truncated file?"
    warnings = json.loads((tmp / "f" / "meta.json").read_text())["warnings"]
    assert [x["utt"] for x in warnings] == ["spk1-u1"] and "truncated file?" in warnings[0]["warning"]
    assert any("spk1-u1" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)


@case
def features_config_is_a_list(tmp, w, capsys):
    conf = yaml_file(tmp, "- kind: mfcc\n")
    expect_error(capsys, features_argv(w.data, tmp / "f", "--config", conf), str(conf), "YAML mapping")


@case
def features_unknown_override(tmp, w, capsys):
    expect_error(capsys, features_argv(w.data, tmp / "f", "--set", "chanel=0"), "chanel", "known")


@case
def features_bad_kind(tmp, w, capsys):
    expect_error(capsys, features_argv(w.data, tmp / "f", "--set", "kind=plp"), "'plp'", "fbank")


@case
def features_zero_bins(tmp, w, capsys):
    expect_error(capsys, features_argv(w.data, tmp / "f", "--set", "num_bins=0"), "num_bins")


@case
def features_negative_channel(tmp, w, capsys):
    expect_error(capsys, features_argv(w.data, tmp / "f", "--set", "channel=-1"), "channel must be >= 0")


@case
def features_disk_full_keeps_old_store(tmp, w, capsys, monkeypatch):
    out = feats_copy(tmp, w)
    from asr_kd.data.store import RaggedStoreWriter

    def full(self, key, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.tmp / "data.bin"))
    monkeypatch.setattr(RaggedStoreWriter, "add", full)
    expect_error(capsys, features_argv(w.data, out, "--overwrite"), "no space left on device", "data.bin",
                 protected=(out,))
    assert temp_leftovers(tmp) == []


@case
def stale_temp_dirs_of_dead_writers_removed(tmp, w, capsys):
    from asr_kd.io import make_temp_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp / "f"
    stale = make_temp_dir(out)
    stale_dead = stale.with_name(stale.name.replace(f".{os.getpid()}@", f".{dead.pid}@"))
    stale.rename(stale_dead)
    (stale_dead / "data.bin").write_bytes(b"\0" * 1000)
    live = make_temp_dir(out)  # this process is alive: its temp dir must survive
    assert run(features_argv(w.data, out), capsys)[0] == 0
    assert not stale_dead.exists() and live.exists()


@case
def killed_writer_leftover_removed(tmp, w, capsys):
    """A real kill -9 of a process holding a temp dir; the next writer of the same output removes it."""
    code = ("import sys, time; from asr_kd.io import make_temp_dir; d = make_temp_dir(sys.argv[1]); "
            "print(d, flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp / "cache")], stdout=subprocess.PIPE, text=True, env=env)
    leftover = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert leftover.is_dir()
    from asr_kd.io import write_json
    write_json(tmp / "cache", {"ok": 1})
    assert not leftover.exists()


# ---------------------------------------------------------------- stores

@case
def store_truncated_data_bin(tmp, w, capsys):
    f = feats_copy(tmp, w)
    data = (f / "data.bin").read_bytes()
    (f / "data.bin").write_bytes(data[: len(data) // 2])
    expect_error(capsys, ["export-kaldi-feats", f, tmp / "a.ark", tmp / "a.scp"], f"{f}/data.bin", "truncated")


@case
def store_no_meta(tmp, w, capsys):
    f = feats_copy(tmp, w)
    (f / "meta.json").unlink()
    expect_error(capsys, ["export-kaldi-feats", f, tmp / "a.ark", tmp / "a.scp"], f"{f}: not a store")


@case
def store_corrupt_meta(tmp, w, capsys):
    f = feats_copy(tmp, w)
    (f / "meta.json").write_text('{"dtype": "float16", "row_', encoding="utf-8")
    expect_error(capsys, ["export-kaldi-feats", f, tmp / "a.ark", tmp / "a.scp"], f"{f}/meta.json", "corrupt JSON")


@case
def store_corrupt_offsets(tmp, w, capsys):
    f = feats_copy(tmp, w)
    (f / "offsets.npy").write_bytes(b"garbage")
    expect_error(capsys, ["export-kaldi-feats", f, tmp / "a.ark", tmp / "a.scp"], f"{f}/offsets.npy")


@case
def store_missing_keys(tmp, w, capsys):
    f = feats_copy(tmp, w)
    (f / "keys.txt").unlink()
    expect_error(capsys, ["export-kaldi-feats", f, tmp / "a.ark", tmp / "a.scp"], f"{f}/keys.txt: file not found")


@case
def store_keys_offsets_mismatch(tmp, w, capsys):
    f = feats_copy(tmp, w)
    write_lines(f / "keys.txt", ["spk1-u1"])
    expect_error(capsys, ["export-kaldi-feats", f, tmp / "a.ark", tmp / "a.scp"], f"{f}", "does not match")


@case
def ali_stats_on_a_feature_store(tmp, w, capsys):
    expect_error(capsys, ["ali-stats", w.feats], f"{w.feats}", "it is a feature store")


@case
def train_feats_and_ali_swapped(tmp, w, capsys):
    feats, ali = w.train
    expect_error(capsys, ["train", ali, feats, *w.dev, tmp / "m", *TINY_TRAIN], f"{ali}", "alignment store",
                 "wrong order")
    assert not (tmp / "m").exists()


@case
def train_nan_features(tmp, w, capsys):
    from asr_kd.data.store import RaggedStore, write_store
    src = RaggedStore(w.train[0])
    items = [(k, np.array(src[k])) for k in src]
    items[2][1][1, 0] = np.nan
    write_store(tmp / "nan", items, meta=dict(src.meta))
    expect_error(capsys, ["train", tmp / "nan", w.train[1], *w.dev, tmp / "m", *TINY_TRAIN], f"{items[2][0]!r}",
                 "NaN/inf")


def nan_mfcc(tmp, w) -> Path:
    from asr_kd.data.store import RaggedStore, write_store
    src = RaggedStore(w.feats)
    items = [(k, np.array(src[k], dtype=np.float32)) for k in src]
    items[1][1][3, 2] = np.nan
    write_store(tmp / "nanf", items, meta=dict(src.meta), dtype=src.meta["dtype"])
    return tmp / "nanf"


@case
def align_nan_features(tmp, w, capsys):
    expect_error(capsys, ["align", nan_mfcc(tmp, w), w.data, tmp / "lang", tmp / "mono", tmp / "ali"],
                 "'spk1-u2'", "NaN/inf")


@case
def train_mono_nan_features(tmp, w, capsys):
    expect_error(capsys, ["train-mono", nan_mfcc(tmp, w), w.data, tmp / "lang", tmp / "mono"], "'spk1-u2'", "NaN/inf")


@case
def train_mono_given_an_alignment(tmp, w, capsys):
    expect_error(capsys, ["train-mono", w.train[1], w.data, tmp / "lang", tmp / "mono"], f"{w.train[1]}",
                 "alignment store")


# ---------------------------------------------------------------- alignments

def ali_copy(tmp: Path, w: World, edit) -> Path:
    from asr_kd.data.store import RaggedStore, write_store
    src = RaggedStore(w.train[1])
    items = edit([(k, np.array(src[k])) for k in src])
    write_store(tmp / "ali", items, meta=dict(src.meta), dtype="int32")
    return tmp / "ali"


@case
def ali_pdf_out_of_range(tmp, w, capsys):
    def edit(items):
        items[1][1][0] = 7
        return items
    ali = ali_copy(tmp, w, edit)
    expect_error(capsys, train_argv(w, tmp / "m")[:1] + [w.train[0], ali, *w.dev, tmp / "m", *TINY_TRAIN],
                 f"{ali}", "outside [0, 4)")


@case
def ali_frame_count_mismatch(tmp, w, capsys):
    def edit(items):
        items[0] = (items[0][0], items[0][1][:-1])
        return items
    ali = ali_copy(tmp, w, edit)
    expect_error(capsys, ["train", w.train[0], ali, *w.dev, tmp / "m", *TINY_TRAIN], f"{ali}", "labels but")


@case
def ali_dev_other_pdf_count(tmp, w, capsys):
    dev_feats, dev_ali = make_sets(tmp, num_utts=3, num_pdfs=6, max_len=10, name="dev6")
    expect_error(capsys, ["train", *w.train, dev_feats, dev_ali, tmp / "m", *TINY_TRAIN], "6 pdfs")


@case
def ali_without_num_pdfs(tmp, w, capsys):
    from asr_kd.data.store import RaggedStore, write_store
    src = RaggedStore(w.train[1])
    write_store(tmp / "ali", [(k, np.array(src[k])) for k in src], meta={"source": "x"}, dtype="int32")
    expect_error(capsys, ["eval-frames", w.model, w.train[0], tmp / "ali"], f"{tmp / 'ali'}", "no num_pdfs")


@case
def priors_corrupt(tmp, w, capsys):
    ali = copy(w.train[1], tmp / "ali")
    (ali / "priors.npy").write_bytes(b"\x93NUMPY garbage")
    expect_error(capsys, ["compute-loglikes", w.model, w.dev[0], ali, tmp / "ll"], f"{ali}/priors.npy", "unreadable")
    assert not (tmp / "ll").exists()


@case
def eval_frames_with_swapped_stores(tmp, w, capsys):
    expect_error(capsys, ["eval-frames", w.model, w.train[1], w.train[0]], f"{w.train[1]}", "alignment store")


# ---------------------------------------------------------------- configs

def train_config_error(tmp, w, capsys, text: str, *needles: str):
    conf = yaml_file(tmp, text)
    expect_error(capsys, train_argv(w, tmp / "m", "--config", conf), str(conf), *needles)
    assert not (tmp / "m").exists()


@case
def config_scientific_notation_is_float(tmp, w, capsys):
    from asr_kd.nnet.train import TrainConfig
    assert load_config(TrainConfig, yaml_file(tmp, "lr: 1e-3\nweight_decay: 5E-4\n")).lr == 0.001
    assert load_config(TrainConfig, None, ["lr=2e-2"]).lr == 0.02


@case
def config_negative_lr(tmp, w, capsys):
    train_config_error(tmp, w, capsys, "lr: -0.1\n", "lr must be > 0")


@case
def config_batch_size_zero(tmp, w, capsys):
    train_config_error(tmp, w, capsys, "batch_size: 0\n", "batch_size must be >= 1")


@case
def config_hidden_dim_zero(tmp, w, capsys):
    expect_error(capsys, ["train", *w.train, *w.dev, tmp / "m", *TINY_TRAIN, "--set", "model.hidden_dim=0"],
                 "hidden_dim must be >= 1")


@case
def config_negative_context(tmp, w, capsys):
    train_config_error(tmp, w, capsys, "left_context: -1\n", "left_context")


@case
def config_max_epochs_zero(tmp, w, capsys):
    expect_error(capsys, train_argv(w, tmp / "m", "--set", "max_epochs=0"), "max_epochs must be >= 1")


@case
def config_min_above_max_epochs(tmp, w, capsys):
    train_config_error(tmp, w, capsys, "min_epochs: 5\nmax_epochs: 3\n", "min_epochs 5 > max_epochs 3")


@case
def config_is_a_list(tmp, w, capsys):
    train_config_error(tmp, w, capsys, "- lr: 0.1\n", "YAML mapping", "list")


@case
def config_syntax_error(tmp, w, capsys):
    train_config_error(tmp, w, capsys, "lr: [0.1\n", "cannot read config")


@case
def config_unknown_key(tmp, w, capsys):
    train_config_error(tmp, w, capsys, "learning_rate: 0.1\n", "unknown key", "learning_rate")


@case
def config_wrong_type(tmp, w, capsys):
    train_config_error(tmp, w, capsys, "lr: fast\n", ".lr", "expected float")


@case
def config_is_a_directory(tmp, w, capsys):
    expect_error(capsys, train_argv(w, tmp / "m", "--config", tmp), f"{tmp}: is a directory")


@case
def config_not_utf8(tmp, w, capsys):
    conf = tmp / "c.yaml"
    conf.write_bytes(b"lr: 0.1 # \xff\n")
    expect_error(capsys, train_argv(w, tmp / "m", "--config", conf), str(conf), "not UTF-8")


@case
def config_override_without_equals(tmp, w, capsys):
    expect_error(capsys, train_argv(w, tmp / "m", "--set", "lr"), "'lr'", "key=value")


@case
def config_dict_field_replaces(tmp, w, capsys):
    from asr_kd.distill.distill import DistillConfig
    cfg = load_config(DistillConfig, yaml_file(tmp, "loss: {terms: {soft_kl: 1.0}}\nstudent: {lr: 0.01}\n"))
    assert cfg.loss.terms == {"soft_kl": 1.0}  # replaced, not merged into the default soft_ce + hard_ce
    assert cfg.student.lr == 0.01 and cfg.student.batch_size == 256  # a config section still merges


@case
def config_loss_temperature_zero(tmp, w, capsys):
    from asr_kd.distill.distill import DistillConfig
    conf = yaml_file(tmp, "loss: {temperature: 0}\n")
    expect_raises(lambda: load_config(DistillConfig, conf), str(conf), "temperature")


@case
def config_tri_sizes(tmp, w, capsys):
    from asr_kd.align.tri import TriConfig
    conf = yaml_file(tmp, "num_leaves: 500\ntot_gauss: 100\n")
    expect_raises(lambda: load_config(TriConfig, conf), str(conf), "tot_gauss >= num_leaves")


@case
def config_mono_iters(tmp, w, capsys):
    from asr_kd.align.mono import MonoConfig
    expect_raises(lambda: load_config(MonoConfig, None, ["num_iters=0"]), "num_iters >= 1")


@case
def config_align_beam(tmp, w, capsys):
    from asr_kd.align.alignment import AlignConfig
    expect_raises(lambda: load_config(AlignConfig, None, ["beam=0"]), "beams")


@case
def no_assert_validation_in_the_package(tmp, w, capsys):
    found = []
    for path in (REPO / "asr_kd").rglob("*.py"):
        found += [f"{path}:{n.lineno}" for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Assert)]
    assert found == [], f"validation by assert (python -O drops it): {found}"


# ---------------------------------------------------------------- models, checkpoints, training faults

@case
def model_corrupt_final_pt(tmp, w, capsys):
    m = copy(w.model, tmp / "m")
    (m / "final.pt").write_bytes(b"not a zip")
    expect_error(capsys, ["eval-frames", m, *w.dev], f"{m}/final.pt", "corrupt or truncated model")


@case
def model_truncated_final_pt(tmp, w, capsys):
    m = copy(w.model, tmp / "m")
    data = (m / "final.pt").read_bytes()
    (m / "final.pt").write_bytes(data[: len(data) // 2])
    expect_error(capsys, ["compute-loglikes", m, w.dev[0], "none", tmp / "ll"], f"{m}/final.pt", "truncated")


@case
def model_missing(tmp, w, capsys):
    expect_error(capsys, ["eval-frames", tmp / "nomodel", *w.dev], "nomodel", "no trained model")


@case
def model_other_pdf_count_in_final(tmp, w, capsys):
    import torch
    m = copy(w.model, tmp / "m")
    blob = torch.load(m / "final.pt", weights_only=True)
    blob["spec"]["num_pdfs"] = 6
    torch.save(blob, m / "final.pt")
    expect_error(capsys, ["eval-frames", m, *w.dev], f"{m}/final.pt", "another number of pdfs")


@case
def checkpoint_corrupt(tmp, w, capsys):
    m = copy(w.model, tmp / "m")
    (m / "final.pt").unlink()
    for ckpt in (m / "checkpoints").glob("*.pt"):
        ckpt.write_bytes(b"PK\x03\x04 truncated")
    killed(w, m, "--set", "max_epochs=2")
    expect_error(capsys, train_argv(w, m, "--set", "max_epochs=2"), "checkpoints/epoch_1.pt", "corrupt or truncated",
                 protected=(m,))


@case
def checkpoint_other_pdf_count(tmp, w, capsys):
    m = copy(w.model, tmp / "m")
    (m / "final.pt").unlink()
    feats6, ali6 = make_sets(tmp, num_utts=8, num_pdfs=6, max_len=20, name="t6")
    dev6 = make_sets(tmp, num_utts=3, num_pdfs=6, max_len=10, name="d6", seed=1)
    # the step record names the changed inputs before any checkpoint is read (issue 15 step identity)
    expect_error(capsys, ["train", feats6, ali6, *dev6, m, *TINY_TRAIN], "was made by another step", "input ali",
                 "--overwrite", protected=(m,))


@case
def training_diverges(tmp, w, capsys):
    expect_error(capsys, train_argv(w, tmp / "m", "--set", "lr=1e4", "--set", "grad_clip=0"), "diverged at epoch 1",
                 "--set lr=1000")
    assert not (tmp / "m" / "final.pt").exists()


@case
def train_disk_full_on_checkpoint(tmp, w, capsys, monkeypatch):
    import torch

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")
    monkeypatch.setattr(torch, "save", full)
    expect_error(capsys, train_argv(w, tmp / "m"), "checkpoints/epoch_1.pt", "disk full")
    assert temp_leftovers(tmp) == []


@case
def cache_teacher_top_k_above_pdfs(tmp, w, capsys):
    expect_error(capsys, ["cache-teacher", w.model, "--feats", w.dev[0], "--out", tmp / "c", "--top-k", "9"],
                 "--top-k 9", "4 pdfs")
    assert not (tmp / "c").exists()


# ---------------------------------------------------------------- scoring and report

def ref_hyp(tmp: Path, hyp_lines: list[str]) -> tuple[Path, Path]:
    ref = write_lines(tmp / "ref.txt", ["u1 YES NO", "u2 NO", "u3 YES YES"])
    return ref, write_lines(tmp / "hyp.txt", hyp_lines)


@case
def score_missing_hypotheses(tmp, w, capsys):
    ref, hyp = ref_hyp(tmp, ["u1 YES NO"])
    expect_error(capsys, ["score", ref, hyp, tmp / "s"], f"{hyp}", "2 of 3", "'u2'", "--mode")
    assert not (tmp / "s").exists()
    code, out, _ = run(["score", ref, hyp, tmp / "s", "--mode", "present"], capsys)  # the hint, as written
    assert code == 0 and "0.00" in out


@case
def score_extra_hypothesis(tmp, w, capsys):
    ref, hyp = ref_hyp(tmp, ["u1 YES NO", "u2 NO", "u3 YES", "u9 NO"])
    expect_error(capsys, ["score", ref, hyp, tmp / "s"], "without a reference", "u9")


@case
def score_hyp_not_utf8(tmp, w, capsys):
    ref, hyp = ref_hyp(tmp, [])
    hyp.write_bytes(b"u1 YES\nu2 N\xffO\n")
    expect_error(capsys, ["score", ref, hyp, tmp / "s"], f"{hyp}:2: not UTF-8")


@case
def score_hyp_missing(tmp, w, capsys):
    ref, _ = ref_hyp(tmp, [])
    expect_error(capsys, ["score", ref, tmp / "nohyp", tmp / "s"], f"{tmp / 'nohyp'}: file not found")


@case
def report_corrupt_wer_json(tmp, w, capsys):
    tri = tmp / "exp" / "tri1"
    (tri / "decode_test").mkdir(parents=True)
    (tri / "final.mdl").write_text("x")
    (tri / "decode_test" / "wer.json").write_text('{"wer": 0.1', encoding="utf-8")
    expect_error(capsys, ["report", tmp / "exp", "--out", tmp / "r"], "decode_test/wer.json", "corrupt JSON")


@case
def report_corrupt_metrics(tmp, w, capsys):
    m = copy(w.model, tmp / "exp" / "dnn")
    with open(m / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"epoch": 2, "lr"\n')
    expect_error(capsys, ["report", tmp / "exp", "--out", tmp / "r"], "metrics.jsonl:2", "not JSON")


# ---------------------------------------------------------------- recipes (subprocess: shell)

def recipe(*args, cwd: Path = REPO, env: dict | None = None, script: Path | None = None):
    cmd = ["bash", str(script or REPO / "recipes" / "an4" / "run.sh"), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, env=env or dict(os.environ))


def expect_recipe_error(out, *needles: str) -> None:
    assert out.returncode != 0, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@case
def recipe_stage_not_a_number(tmp, w, capsys):
    expect_recipe_error(recipe("--stage", "abc"), "--stage", "'abc'")


@case
def recipe_stage_after_stop(tmp, w, capsys):
    expect_recipe_error(recipe("--stage", "9", "--stop-stage", "2"), "--stage 9", "--stop-stage 2")


@case
def recipe_unknown_option(tmp, w, capsys):
    expect_recipe_error(recipe("--hidden-dims", "5"), "unknown option --hidden-dims")


@case
def recipe_missing_config(tmp, w, capsys):
    expect_recipe_error(recipe("--config", "gpu.conf", cwd=tmp), "gpu.conf", str(tmp / "gpu.conf"))


@case
def recipe_bad_python(tmp, w, capsys):
    expect_recipe_error(recipe("--python", tmp / "nopython", "--data", tmp / "d", "--exp", tmp / "e"),
                        "cannot import asr_kd", "make setup")


@case
def recipe_without_venv_says_how_to_make_it(tmp, w, capsys):
    if subprocess.run(["bash", "-c", "python3 -c 'import asr_kd, torch'"], capture_output=True,
                      env={"PATH": "/usr/bin:/bin"}).returncode == 0:
        pytest.skip("the system python3 imports asr_kd: nothing to find")
    repo = tmp / "repo"
    shutil.copytree(REPO / "recipes", repo / "recipes")  # a checkout without .venv
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp)}
    out = recipe("--data", tmp / "d", "--exp", tmp / "e", script=repo / "recipes" / "an4" / "run.sh", env=env)
    expect_recipe_error(out, "no Python with asr_kd", "make setup", str(repo))


@case
def recipe_relative_paths_resolve_against_caller(tmp, w, capsys):
    """kaldi_dir with a relative --train-dir run from tmp: resolved in tmp, not in the recipe's dir."""
    script = REPO / "recipes" / "kaldi_dir" / "run.sh"
    (tmp / "mydata").mkdir()
    out = recipe("--python", sys.executable, "--train-dir", "mydata/train", "--dev-dir", "mydata/dev",
                 "--test-dir", "mydata/test", "--dict-dir", "mydata/dict", "--data", "out/data", "--exp", "out/exp",
                 "--stop-stage", "0", cwd=tmp, script=script)
    assert out.returncode != 0
    assert f"{tmp}/mydata/train: data dir not found" in out.stderr + out.stdout
    assert (tmp / "out" / "exp" / "log").is_dir() and not (script.parent / "out").exists()


# ---------------------------------------------------------------- the parametrised test

@pytest.mark.parametrize("check", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input(check, world, tmp_path, capsys, request):
    extra = {name: request.getfixturevalue(name) for name in ("monkeypatch", "caplog")
             if name in check.__code__.co_varnames[:check.__code__.co_argcount]}
    check(tmp_path, world, capsys, **extra)

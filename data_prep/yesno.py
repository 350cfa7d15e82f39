"""waves_yesno (OpenSLR 1): 60 recordings of eight Hebrew "yes"/"no" words each, 8 kHz.

    python -m data_prep.yesno download --dest DIR      # waves_yesno.tar.gz, ~4.5 MB
    python -m data_prep.yesno prepare --corpus DIR/waves_yesno --out recipes/yesno/data

The file name is the transcript (`0_1_1_0_...wav`: 1 = YES, 0 = NO). Kaldi's split (egs/yesno/s5,
local/create_yesno_waves_test_train.pl): `train` is the first half of `ls` of the unpacked dir, which
also held README and README~, so 31 of the 60 recordings in sorted order; `test` the other 29 (232
words, the set of Kaldi's 0.00% WER). All from one speaker `global` (so, unlike other corpora, the
sets share their speaker). The audio is 8 kHz: feature
configs for this corpus must say so (or resample explicitly).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from asr_kd.data.datadir import DataDir, c_order
from asr_kd.errors import AsrKdError
from data_prep.common import Utterance, corpus_cli, write_dict_dir, write_sets
from data_prep.download import Remote, fetch_and_unpack

# No checksum from OpenSLR found for resource 1; the sha256 is the one torchaudio pins (datasets/yesno.py).
ARCHIVE = Remote("https://www.openslr.org/resources", "1/waves_yesno.tar.gz",
                 sha256="c3f49e0cca421f96b75b41640749167b52118f232498667ca7a5f9416aef8e73")
LOCAL_COPY = "--corpus DIR or YESNO_CORPUS=DIR (the waves_yesno dir)"
NAME = re.compile(r"^[01](_[01])+\.wav$")
WORDS = {"0": "NO", "1": "YES"}
SPEAKER = "global"


def find_root(corpus: str | Path) -> Path:
    corpus = Path(corpus)
    for root in (corpus, corpus / "waves_yesno"):
        if root.is_dir() and any(NAME.match(p.name) for p in root.iterdir()):
            return root
    raise AsrKdError(f"{corpus}: no waves_yesno recordings (0_1_..._1.wav); "
                     "fetch them with `python -m data_prep.yesno download --dest DIR`")


def utterance(path: Path) -> Utterance:
    utt_id = f"{SPEAKER}-{path.stem}"
    return Utterance(utt_id, SPEAKER, path, tuple(WORDS[bit] for bit in path.stem.split("_")), str(path))


def prepare(corpus: str | Path, out: str | Path) -> dict[str, DataDir]:
    """Write out/{train,test} and out/local/dict (YES Y, NO N, <SIL> SIL)."""
    root = find_root(corpus)
    files = sorted((p for p in root.iterdir() if NAME.match(p.name)), key=lambda p: c_order(p.name))
    num_train = kaldi_train_size(len(files))
    sets = {"train": [utterance(p) for p in files[:num_train]], "test": [utterance(p) for p in files[num_train:]]}
    written = write_sets(out, sets, disjoint_speakers=False)
    lexicon = [("YES", ("Y",)), ("NO", ("N",))]
    write_dict_dir(Path(out) / "local" / "dict", lexicon, ["SIL"], "SIL", {"<SIL>": "SIL"})
    return written


def kaldi_train_size(num_recordings: int) -> int:
    """Kaldi's train share: half of a listing of the recordings plus README and README~ (31 of 60)."""
    return (num_recordings + 2) // 2


def add_prepare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="the waves_yesno dir (or its parent)")
    parser.add_argument("--out", required=True, help="output data dir root")


def add_download_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", required=True, help="directory to download and unpack into")


def download_corpus(args: argparse.Namespace) -> None:
    fetch_and_unpack(ARCHIVE, args.dest, LOCAL_COPY)
    print(f"waves_yesno is in {find_root(args.dest)}")


def main(argv: list[str] | None = None) -> int:
    return corpus_cli(__doc__.splitlines()[0], add_prepare_args, lambda a: prepare(a.corpus, a.out),
                      add_download_args, download_corpus, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""CMU AN4 (census, close-talking): data/{train,dev,test} and data/local/dict from the CMU release.

    python -m data_prep.an4 download --dest DIR        # the official CMU tarball (NIST SPHERE), ~64 MB
    python -m data_prep.an4 prepare --corpus DIR/an4 --out recipes/an4/data

Layout read: `etc/an4_{train,test}.fileids` (paths without extension under `wav/`),
`etc/an4_{train,test}.transcription` (`<s> WORDS </s> (utt)`), `etc/an4.dic`, and audio
`wav/an4{,test}_clstk/<speaker>/<utt>.{sph,wav,flac}` (whichever exists; soundfile reads all: the
CMU tarball's `.sph` files are uncompressed 16-bit NIST SPHERE, the only kind libsndfile reads).

Choices:
- utterance ids are `<speaker>-<file name>` (`fash-an251-fash-b`): AN4 file names start with the
  prompt id, not the speaker, and Kaldi needs sorted utterance ids grouped by speaker;
- dev = every 10th training speaker in sorted order (the 10th, 20th, ..., 70th: 7 of 74), so the
  held-out speakers are fixed without a seed and never appear in train;
- the fillers `<s> </s> <sil>` are dropped from transcripts; the lexicon maps `WORD(2)` to `WORD`
  and adds `!SIL SIL`; silence and optional silence phone is SIL.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from asr_kd.data.datadir import DataDir, c_order
from asr_kd.errors import AsrKdError
from data_prep.common import Lexicon, Utterance, add_unk, check_oov, corpus_cli, write_dict_dir, write_sets
from data_prep.download import Remote, fetch_and_unpack

# CMU publishes no checksum and no exact size (its page says "64M"). The sha256 is the one pinned in
# public code for NeMo's copy of the same file (dldata-public.s3.us-east-2.amazonaws.com/an4_sphere.tar.gz);
# it was not checked against CMU's copy here (no network). If CMU's bytes differ, the download is
# refused with both checksums named, and ASR_KD_DOWNLOAD_SHA256 can vouch for the copy (download.py).
ARCHIVE = Remote("http://www.speech.cs.cmu.edu/databases/an4", "an4_sphere.tar.gz",
                 sha256="a0525579493735d32b60fb6fa5975dd0eaacde087b0a4eeb7f13b7ef33077b12")
LOCAL_COPY = "--corpus DIR or AN4_CORPUS=DIR (the an4/ dir holding etc/ and wav/)"
FILLERS = {"<s>", "</s>", "<sil>"}
AUDIO_EXTENSIONS = (".flac", ".wav", ".sph")
DEV_EVERY = 10  # dev = every DEV_EVERY-th training speaker in sorted order


def find_root(corpus: str | Path) -> Path:
    """Accept the corpus dir itself or the dir the tarball was unpacked into (holding `an4/`)."""
    corpus = Path(corpus)
    for root in (corpus, corpus / "an4"):
        if (root / "etc" / "an4_train.fileids").is_file():
            return root
    raise AsrKdError(f"{corpus}: not an AN4 corpus (no etc/an4_train.fileids); "
                     "fetch it with `python -m data_prep.an4 download --dest DIR`")


def read_part(root: Path, part: str) -> list[Utterance]:
    """One release part ('train' or 'test'): file list and transcripts, cross-checked line by line."""
    fileids_path = root / "etc" / f"an4_{part}.fileids"
    trans_path = root / "etc" / f"an4_{part}.transcription"
    fileids = fileids_path.read_text(encoding="utf-8").split()
    lines = trans_path.read_text(encoding="utf-8").splitlines()
    if len(fileids) != len(lines):
        raise AsrKdError(f"{trans_path}: {len(lines)} transcripts but {len(fileids)} files in {fileids_path}")
    return [parse_utterance(root, fileid, line, f"{trans_path}:{number}")
            for number, (fileid, line) in enumerate(zip(fileids, lines), start=1)]


def parse_utterance(root: Path, fileid: str, line: str, source: str) -> Utterance:
    tokens = line.split()
    if not tokens or not (tokens[-1].startswith("(") and tokens[-1].endswith(")")):
        raise AsrKdError(f"{source}: expected 'WORDS (utterance-id)'")
    name = tokens[-1][1:-1]
    speaker = Path(fileid).parent.name
    if Path(fileid).name != name:
        raise AsrKdError(f"{source}: utterance '{name}' but the file list has '{fileid}' on this line")
    words = tuple(w for w in tokens[:-1] if w not in FILLERS)
    if not words:
        raise AsrKdError(f"{source}: empty transcript for utterance '{name}'")
    return Utterance(f"{speaker}-{name}", speaker, find_audio(root / "wav" / fileid, name), words, source)


def find_audio(stem: Path, utt: str) -> Path:
    for ext in AUDIO_EXTENSIONS:
        if stem.with_suffix(ext).is_file():
            return stem.with_suffix(ext)
    raise AsrKdError(f"utterance '{utt}': no audio file {stem}{{{','.join(AUDIO_EXTENSIONS)}}}")


def read_lexicon(path: Path) -> Lexicon:
    """etc/an4.dic: `WORD phones`, alternatives as `WORD(2)`; returned with the suffix removed."""
    lexicon = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if len(fields) < 2:
            if fields:
                raise AsrKdError(f"{path}:{number}: word '{fields[0]}' has no pronunciation")
            continue
        word = fields[0].split("(", 1)[0]
        lexicon.append((word, tuple(fields[1:])))
    return lexicon


def dev_speakers(train: list[Utterance]) -> set[str]:
    speakers = sorted({u.speaker for u in train}, key=c_order)
    return set(speakers[DEV_EVERY - 1::DEV_EVERY])


def prepare(corpus: str | Path, out: str | Path, map_oov: bool = False) -> dict[str, DataDir]:
    """Write out/{train,dev,test} and out/local/dict; returns the data dirs."""
    root = find_root(corpus)
    lexicon = read_lexicon(root / "etc" / "an4.dic")
    silence_phones = ["SIL"]
    if map_oov:
        lexicon, silence_phones = add_unk(lexicon, silence_phones)
    train = check_oov(read_part(root, "train"), lexicon, map_oov)
    test = check_oov(read_part(root, "test"), lexicon, map_oov)
    held = dev_speakers(train)
    sets = {"train": [u for u in train if u.speaker not in held],
            "dev": [u for u in train if u.speaker in held],
            "test": test}
    written = write_sets(out, sets)
    write_dict_dir(Path(out) / "local" / "dict", lexicon, silence_phones, "SIL", {"!SIL": "SIL"})
    return written


def add_prepare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="AN4 root (holds etc/ and wav/) or its parent")
    parser.add_argument("--out", required=True, help="output data dir root, e.g. recipes/an4/data")
    parser.add_argument("--map-oov", action="store_true", help="map words missing from an4.dic to <UNK>")


def add_download_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", required=True, help="directory to download and unpack into (gets an4/)")


def download_corpus(args: argparse.Namespace) -> None:
    fetch_and_unpack(ARCHIVE, args.dest, LOCAL_COPY)
    print(f"AN4 is in {find_root(args.dest)}")


def main(argv: list[str] | None = None) -> int:
    return corpus_cli(__doc__.splitlines()[0], add_prepare_args,
                      lambda a: prepare(a.corpus, a.out, a.map_oov), add_download_args, download_corpus, argv)


if __name__ == "__main__":
    raise SystemExit(main())

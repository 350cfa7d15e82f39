"""LibriSpeech (OpenSLR 12) and mini-LibriSpeech (OpenSLR 31): any subset, one data dir each.

    python -m data_prep.librispeech download --dest DIR --subsets dev-clean-2 train-clean-5 --lexicon
    python -m data_prep.librispeech prepare --corpus DIR/LibriSpeech --lexicon DIR/librispeech-lexicon.txt \\
        --out recipes/librispeech/data [--subsets dev-clean test-clean]

Layout read: `<subset>/<reader>/<chapter>/<reader>-<chapter>.trans.txt` (`<utt> WORDS`) next to
`<utt>.flac`. Data dirs are named like Kaldi's (`train-clean-100` -> `train_clean_100`).
Utterance ids are LibriSpeech's own (`<reader>-<chapter>-<n>`, already speaker-prefixed); the
speaker is the reader (Kaldi uses reader-chapter; a reader is the person, which is what a
speaker-disjoint split needs). The lexicon is the official `librispeech-lexicon.txt` (OpenSLR 11,
CMUdict + G2P, stress-marked phones grouped per base phone in nonsilence_phones.txt).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from asr_kd.data.datadir import DataDir, c_order
from asr_kd.errors import AsrKdError
from data_prep.common import (Lexicon, Utterance, add_unk, check_oov, corpus_cli, download, extract,
                              write_dict_dir, write_sets)

OPENSLR = "https://www.openslr.org/resources"
MINI_SUBSETS = {"dev-clean-2", "train-clean-5"}  # OpenSLR 31; the rest are OpenSLR 12
SUBSETS = {"dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360",
           "train-other-500"} | MINI_SUBSETS
LEXICON_URL = f"{OPENSLR}/11/librispeech-lexicon.txt"


def find_root(corpus: str | Path) -> Path:
    corpus = Path(corpus)
    for root in (corpus, corpus / "LibriSpeech"):
        if root.is_dir() and any((root / s).is_dir() for s in SUBSETS):
            return root
    raise AsrKdError(f"{corpus}: no LibriSpeech subset dirs ({', '.join(sorted(SUBSETS))}); "
                     "fetch some with `python -m data_prep.librispeech download --dest DIR --subsets ...`")


def read_subset(subset_dir: Path) -> list[Utterance]:
    utts = []
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt"), key=lambda p: c_order(str(p))):
        reader, chapter = trans.parent.parent.name, trans.parent.name
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            utts.append(parse_line(trans, number, line, reader, chapter))
    if not utts:
        raise AsrKdError(f"{subset_dir}: no <reader>/<chapter>/*.trans.txt files")
    return utts


def parse_line(trans: Path, number: int, line: str, reader: str, chapter: str) -> Utterance:
    source = f"{trans}:{number}"
    fields = line.split()
    if len(fields) < 2:
        raise AsrKdError(f"{source}: empty transcript" + (f" for utterance '{fields[0]}'" if fields else ""))
    utt_id = fields[0]
    if not utt_id.startswith(f"{reader}-{chapter}-"):
        raise AsrKdError(f"{source}: utterance '{utt_id}' is not from reader {reader}, chapter {chapter}")
    audio = trans.parent / f"{utt_id}.flac"
    if not audio.is_file():
        raise AsrKdError(f"{source}: utterance '{utt_id}': audio file {audio} not found")
    return Utterance(utt_id, reader, audio, tuple(fields[1:]), source)


def read_lexicon(path: str | Path | None) -> Lexicon:
    """librispeech-lexicon.txt: `WORD<tab>PH1 PH2 ...`, one line per pronunciation."""
    if path is None or not Path(path).is_file():
        raise AsrKdError(f"LibriSpeech lexicon {path or '(none given)'} not found: pass --lexicon with the "
                         f"official librispeech-lexicon.txt, from {LEXICON_URL} or "
                         "`python -m data_prep.librispeech download --dest DIR --lexicon`")
    lexicon = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if len(fields) == 1:
            raise AsrKdError(f"{path}:{number}: word '{fields[0]}' has no pronunciation")
        if fields:
            lexicon.append((fields[0], tuple(fields[1:])))
    return lexicon


def set_name(subset: str) -> str:
    return subset.replace("-", "_")


def prepare(corpus: str | Path, out: str | Path, lexicon_path: str | Path | None,
            subsets: list[str] | None = None, map_oov: bool = False) -> dict[str, DataDir]:
    """One data dir per subset (all found when none named) + out/local/dict."""
    root = find_root(corpus)
    lexicon = read_lexicon(lexicon_path)
    silence_phones = ["SIL"]
    if map_oov:
        lexicon, silence_phones = add_unk(lexicon, silence_phones)
    subsets = subsets or sorted(s for s in SUBSETS if (root / s).is_dir())
    sets = {}
    for subset in subsets:
        if not (root / subset).is_dir():
            raise AsrKdError(f"{root / subset}: subset not found")
        sets[set_name(subset)] = check_oov(read_subset(root / subset), lexicon, map_oov)
    written = write_sets(out, sets)
    write_dict_dir(Path(out) / "local" / "dict", lexicon, silence_phones, "SIL", {"!SIL": "SIL"})
    return written


def add_prepare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="the LibriSpeech dir holding the subset dirs")
    parser.add_argument("--out", required=True, help="output data dir root")
    parser.add_argument("--lexicon", help="librispeech-lexicon.txt (OpenSLR 11)")
    parser.add_argument("--subsets", nargs="+", choices=sorted(SUBSETS), help="default: every subset found")
    parser.add_argument("--map-oov", action="store_true", help="map words missing from the lexicon to <UNK>")


def add_download_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", required=True, help="directory to download and unpack into (gets LibriSpeech/)")
    parser.add_argument("--subsets", nargs="*", default=[], choices=sorted(SUBSETS))
    parser.add_argument("--lexicon", action="store_true", help="also fetch librispeech-lexicon.txt")


def subset_url(subset: str) -> str:
    return f"{OPENSLR}/{31 if subset in MINI_SUBSETS else 12}/{subset}.tar.gz"


def download_corpus(args: argparse.Namespace) -> None:
    if not args.subsets and not args.lexicon:
        raise AsrKdError("nothing to download: name --subsets and/or --lexicon")
    for subset in args.subsets:
        extract(download(subset_url(subset), args.dest), args.dest)
    if args.lexicon:
        print(f"lexicon: {download(LEXICON_URL, args.dest)}")


def main(argv: list[str] | None = None) -> int:
    return corpus_cli(__doc__.splitlines()[0], add_prepare_args,
                      lambda a: prepare(a.corpus, a.out, a.lexicon, a.subsets, a.map_oov),
                      add_download_args, download_corpus, argv)


if __name__ == "__main__":
    raise SystemExit(main())

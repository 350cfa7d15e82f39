"""LibriSpeech (OpenSLR 12) and mini-LibriSpeech (OpenSLR 31): any subset, one data dir each.

    python -m data_prep.librispeech download --dest DIR --subsets dev-clean-2 train-clean-5 --lexicon \\
        [--lm 3-gram.pruned.1e-7.arpa.gz ...]
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
from data_prep.common import Lexicon, Utterance, add_unk, check_oov, corpus_cli, write_dict_dir, write_sets
from data_prep.download import Remote, fetch, fetch_and_unpack

OPENSLR = "https://www.openslr.org/resources"
# Subset tarballs: md5 from OpenSLR's md5sum.txt (resources/12 and /31), sizes in bytes from Kaldi's
# egs/{librispeech,mini_librispeech}/s5/local/download_and_untar.sh.
SUBSET_ARCHIVES = {
    "dev-clean": Remote(OPENSLR, "12/dev-clean.tar.gz", 337926286, "42e2234ba48799c1f50f24a7926300a1"),
    "dev-other": Remote(OPENSLR, "12/dev-other.tar.gz", 314305928, "c8d0bcc9cca99d4f8b62fcc847357931"),
    "test-clean": Remote(OPENSLR, "12/test-clean.tar.gz", 346663984, "32fa31d27d2e1cad72775fee3f4849a9"),
    "test-other": Remote(OPENSLR, "12/test-other.tar.gz", 328757843, "fb5a50374b501bb3bac4815ee91d3135"),
    "train-clean-100": Remote(OPENSLR, "12/train-clean-100.tar.gz", 6387309499, "2a93770f6d5c6c964bc36631d331a522"),
    "train-clean-360": Remote(OPENSLR, "12/train-clean-360.tar.gz", 23049477885, "c0e676e450a7ff2f54aeade5171606fa"),
    "train-other-500": Remote(OPENSLR, "12/train-other-500.tar.gz", 30593501606, "d1a0fd59409feb2c614ce4d30c387708"),
    "dev-clean-2": Remote(OPENSLR, "31/dev-clean-2.tar.gz", 126046265, "6d7ab67ac6a1d2c993d050e16d61080d"),
    "train-clean-5": Remote(OPENSLR, "31/train-clean-5.tar.gz", 332954390, "5df7d4e78065366204ca6845bb08f490"),
}
SUBSETS = set(SUBSET_ARCHIVES)
# OpenSLR 11 (lexicon, LMs) lists no checksums: sizes in bytes from Kaldi's egs/librispeech/s5/local/download_lm.sh.
LEXICON = Remote(OPENSLR, "11/librispeech-lexicon.txt", 5627646)
LMS = {remote.filename: remote for remote in (
    Remote(OPENSLR, "11/3-gram.arpa.gz", 759636181),
    Remote(OPENSLR, "11/3-gram.pruned.1e-7.arpa.gz", 34094057),
    Remote(OPENSLR, "11/3-gram.pruned.3e-7.arpa.gz", 13654242),
    Remote(OPENSLR, "11/4-gram.arpa.gz", 1355172078),
    Remote(OPENSLR, "11/librispeech-vocab.txt", 1737588))}
LOCAL_COPY = ("--corpus DIR (holding the subset dirs) or LIBRISPEECH_CORPUS=DIR, and --lexicon FILE "
              "(librispeech-lexicon.txt)")


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
                         f"official librispeech-lexicon.txt, from {LEXICON.url} or "
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
    parser.add_argument("--lm", nargs="*", default=[], choices=sorted(LMS), help="official LM files to fetch")


def download_corpus(args: argparse.Namespace) -> None:
    if not args.subsets and not args.lexicon and not args.lm:
        raise AsrKdError("nothing to download: name --subsets, --lexicon and/or --lm")
    for subset in args.subsets:
        fetch_and_unpack(SUBSET_ARCHIVES[subset], args.dest, LOCAL_COPY)
    for remote in ([LEXICON] if args.lexicon else []) + [LMS[name] for name in args.lm]:
        print(f"{remote.filename}: {fetch(remote, args.dest, LOCAL_COPY)}")


def main(argv: list[str] | None = None) -> int:
    return corpus_cli(__doc__.splitlines()[0], add_prepare_args,
                      lambda a: prepare(a.corpus, a.out, a.lexicon, a.subsets, a.map_oov),
                      add_download_args, download_corpus, argv)


if __name__ == "__main__":
    raise SystemExit(main())

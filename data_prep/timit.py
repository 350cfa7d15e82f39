"""TIMIT (LDC93S1, a licensed copy you own): phone-level data dirs train / dev / test.

    python -m data_prep.timit prepare --corpus /path/to/TIMIT --out recipes/timit/data

Layout read: `TRAIN|TEST/DR<n>/<speaker>/<sentence>.WAV` (NIST SPHERE, soundfile reads it) with
`.PHN` next to it; upper or lower case names both work. There is no download: TIMIT is sold by LDC.

Choices (as Kaldi's egs/timit/s5):
- phone recognition: the transcript is the `.PHN` phone sequence folded 61 -> 48 (`q` deleted,
  `h#`/`pau` -> `sil`), the "lexicon" maps each of the 48 phones to itself, and results are scored
  after folding to 39 (`local/phones.48-39.map`, written here from `timit_phones`, is the recipe's
  `--score-map`: Lee & Hon's 39-phone PER, with the 48-phone score kept next to it). TIMITDIC.TXT
  word-level setups are not offered;
  TIMIT's sentences are too few for a word LM and the literature reports phone error rate;
- the SA sentences (two dialect sentences every speaker reads) are excluded everywhere;
- test = the 24-speaker core test set, dev = Kaldi's 50-speaker dev set (from the rest of TEST),
  train = all of TRAIN: 462 speakers / 3696, 50 / 400 and 24 / 192 utterances;
- ids are lower case, utterance = `<speaker>-<sentence>` (`fcjf0-si1027`).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from asr_kd.data.datadir import DataDir, c_order
from asr_kd.errors import AsrKdError
from data_prep.common import Utterance, corpus_cli, write_dict_dir, write_sets
from asr_kd.io import write_text
from data_prep.timit_phones import MAP_48_TO_39, MAP_61_TO_48, PHONES_48, SILENCE_48, map_phones

CORE_TEST_SPEAKERS = frozenset("""
mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0
mbpm0 mklt0 fnlp0 mcmj0 mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0
""".split())
DEV_SPEAKERS = frozenset("""
faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0 fadg0 fdms0 fedw0 mgjf0
mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0 mdvc0 mers0 fmah0 fdrw0
mrcs0 mrjm4 fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 mteb0 mjfc0 mrjr0 fmml0 mrws1
""".split())
DIALECT_DIR = re.compile(r"^dr\d$", re.IGNORECASE)
SCORE_MAP = "phones.48-39.map"  # under out/local: decode --score-map (39-phone PER, Lee & Hon 1989)


def child(parent: Path, name: str) -> Path | None:
    """The entry of `parent` called `name` in any letter case (TIMIT copies differ)."""
    for entry in parent.iterdir():
        if entry.name.lower() == name.lower():
            return entry
    return None


def find_root(corpus: str | Path) -> Path:
    corpus = Path(corpus)
    candidates = [corpus]
    if corpus.is_dir():
        candidates += [c for c in (child(corpus, "timit"), child(corpus, "data")) if c]
    for root in candidates:
        if root.is_dir() and child(root, "train") and child(root, "test"):
            return root
    raise AsrKdError(f"{corpus}: not a TIMIT copy (no TRAIN/ and TEST/ dirs); TIMIT is LDC93S1, from the LDC")


def read_part(part_dir: Path) -> dict[str, list[Utterance]]:
    """Speaker id -> its utterances (SA excluded), for one of TRAIN / TEST."""
    speakers: dict[str, list[Utterance]] = {}
    for region in sorted(p for p in part_dir.iterdir() if DIALECT_DIR.match(p.name)):
        for spk_dir in sorted(p for p in region.iterdir() if p.is_dir()):
            speaker = spk_dir.name.lower()
            speakers[speaker] = [read_utterance(wav, speaker) for wav in sorted(spk_dir.iterdir())
                                 if is_sentence_audio(wav)]
    return speakers


def is_sentence_audio(path: Path) -> bool:
    """`SI1027.WAV`, not the SA sentences and not converted copies such as `SI1027.WAV.wav`."""
    return path.suffix.lower() == ".wav" and "." not in path.stem and not path.stem.lower().startswith("sa")


def read_utterance(wav: Path, speaker: str) -> Utterance:
    utt_id = f"{speaker}-{wav.stem.lower()}"
    phn = wav.with_suffix(".PHN" if wav.suffix == ".WAV" else ".phn")
    if not phn.is_file():
        raise AsrKdError(f"utterance '{utt_id}': phone transcript {phn} not found")
    phones = []
    for number, line in enumerate(phn.read_text(encoding="ascii", errors="replace").splitlines(), start=1):
        fields = line.split()
        if len(fields) != 3 or fields[2] not in MAP_61_TO_48:
            raise AsrKdError(f"{phn}:{number}: utterance '{utt_id}': expected '<start> <end> <phone>' "
                             f"with one of TIMIT's 61 phones, got '{line.strip()}'")
        phones.append(fields[2])
    words = tuple(map_phones(phones, MAP_61_TO_48))
    if not words:
        raise AsrKdError(f"{phn}: empty transcript for utterance '{utt_id}'")
    return Utterance(utt_id, speaker, wav, words, str(phn))


def prepare(corpus: str | Path, out: str | Path) -> dict[str, DataDir]:
    """Write out/{train,dev,test}, a phone-level out/local/dict and the 48 -> 39 scoring map."""
    root = find_root(corpus)
    train = read_part(child(root, "train"))
    test_part = read_part(child(root, "test"))
    for name, wanted in (("core test", CORE_TEST_SPEAKERS), ("dev", DEV_SPEAKERS)):
        missing = sorted(wanted - set(test_part), key=c_order)
        if missing:
            raise AsrKdError(f"{root}: {len(missing)} {name} speakers missing from TEST (first: '{missing[0]}')")
    sets = {"train": [u for utts in train.values() for u in utts],
            "dev": [u for s in sorted(DEV_SPEAKERS) for u in test_part[s]],
            "test": [u for s in sorted(CORE_TEST_SPEAKERS) for u in test_part[s]]}
    written = write_sets(out, sets)
    lexicon = [(p, (p,)) for p in PHONES_48 if p != SILENCE_48]
    write_dict_dir(Path(out) / "local" / "dict", lexicon, [SILENCE_48], SILENCE_48, {SILENCE_48: SILENCE_48})
    write_text(Path(out) / "local" / SCORE_MAP, "".join(f"{p} {MAP_48_TO_39[p]}\n" for p in PHONES_48))
    return written


def add_prepare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="TIMIT root (holds TRAIN/ and TEST/)")
    parser.add_argument("--out", required=True, help="output data dir root")


def add_download_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", help=argparse.SUPPRESS)


def download_corpus(args: argparse.Namespace) -> None:
    raise AsrKdError("TIMIT cannot be downloaded freely: it is LDC93S1 (https://catalog.ldc.upenn.edu/LDC93S1)")


def main(argv: list[str] | None = None) -> int:
    return corpus_cli(__doc__.splitlines()[0], add_prepare_args, lambda a: prepare(a.corpus, a.out),
                      add_download_args, download_corpus, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Dict dir -> Kaldi lang dir (utils/prepare_lang.sh semantics, position-independent phones).

Phones are position-independent (like `prepare_lang.sh --position-dependent-phones false`): one
symbol per phone, so a monophone system has (3 x nonsilence + 5 x silence) pdfs. The lexicon FST
has optional silence between words (probability `sil_prob`, default 0.5), made as Kaldi's
make_lexicon_fst.py does; L_disambig.fst adds #1.. on homophones/prefixes, a silence
disambiguation symbol, and the #0:#0 self-loop that lets G's back-off arcs through.

Lang dir layout (ARTIFACTS.md): phones.txt, words.txt, topo, L.fst, L_disambig.fst, oov.txt/.int,
phones/{silence,nonsilence,optional_silence,disambig,context_indep,wdisambig_phones,
wdisambig_words}.{txt,int}, phones/{sets,roots,extra_questions}.{txt,int}, phones/align_lexicon.txt (word word phones...).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path, read_lines
from asr_kd.lang.lexicon import DictDir, add_disambig, read_dict_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lang:
    """The symbol tables and lexicon of a lang dir, before they are written."""
    phone2id: dict[str, int]
    word2id: dict[str, int]
    lexicon: list[tuple[str, tuple[str, ...]]]  # with disambiguation symbols
    max_disambig: int                           # #0 .. #max_disambig are in phones.txt
    dict_dir: DictDir

    @property
    def sil_disambig(self) -> str:
        return f"#{self.max_disambig}"


def prepare_lang(dict_dir: str | os.PathLike, lang_dir: str | os.PathLike, *, sil_prob: float = 0.5,
                 oov_word: str = "<UNK>") -> Lang:
    """Build `lang_dir` from `dict_dir` (atomically: the whole dir appears at once)."""
    if not 0.0 < sil_prob < 1.0:
        raise AsrKdError(f"sil_prob must be in (0, 1), got {sil_prob}")
    d = read_dict_dir(dict_dir)
    if oov_word not in {w for w, _ in d.lexicon}:
        log.warning("%s not in %s/lexicon.txt; adding it pronounced as %s", oov_word, dict_dir, d.optional_silence)
        d = DictDir(d.lexicon + [(oov_word, (d.optional_silence,))], d.silence_sets, d.nonsilence_sets,
                    d.optional_silence)
    lang = build_lang(d)
    with atomic_path(lang_dir, is_dir=True) as tmp:
        write_lang_files(lang, tmp, sil_prob, oov_word)
    log.info("lang dir %s: %d phones, %d words, %d pronunciations, disambig #0..#%d", lang_dir,
             len(d.silence_phones) + len(d.nonsilence_phones), len(lang.word2id) - 4, len(lang.lexicon),
             lang.max_disambig)
    return lang


def build_lang(d: DictDir) -> Lang:
    """Symbol tables: phones.txt = <eps>, silence, nonsilence, #0..#N; words.txt = <eps>, words, #0, <s>, </s>."""
    lexicon, max_lex_disambig = add_disambig(d.lexicon)
    max_disambig = max_lex_disambig + 1  # one more for silence in L_disambig (as prepare_lang.sh)
    phones = ["<eps>", *d.silence_phones, *d.nonsilence_phones] + [f"#{i}" for i in range(max_disambig + 1)]
    words = ["<eps>", *sorted({w for w, _ in d.lexicon}), "#0", "<s>", "</s>"]
    return Lang({p: i for i, p in enumerate(phones)}, {w: i for i, w in enumerate(words)}, lexicon,
                max_disambig, d)


def lexicon_arcs(lang: Lang, sil_prob: float, disambig: bool) -> tuple[list[tuple], int, dict[int, float]]:
    """Arcs (src, dst, phone, word, cost) of L with optional silence, as Kaldi's make_lexicon_fst.py.

    State 0 = start, 1 = loop (final), 2 = after-silence. With `disambig`, pronunciations keep their
    #k, silence is followed by the silence disambiguation symbol, and the loop state gets #0:#0.
    """
    p, w = lang.phone2id, lang.word2id
    sil, sil_cost, nosil_cost = p[lang.dict_dir.optional_silence], -math.log(sil_prob), -math.log(1 - sil_prob)
    start, loop, sil_state = 0, 1, 2
    if disambig:
        sil_disambig_state = 3
        arcs = [(start, loop, 0, 0, nosil_cost), (start, sil_disambig_state, sil, 0, sil_cost),
                (sil_state, sil_disambig_state, sil, 0, 0.0), (sil_disambig_state, loop, p[lang.sil_disambig], 0, 0.0),
                (loop, loop, p["#0"], w["#0"], 0.0)]
    else:
        arcs = [(start, loop, 0, 0, nosil_cost), (start, sil_state, 0, 0, sil_cost), (sil_state, loop, sil, 0, 0.0)]
    next_state = 1 + max(a[1] for a in arcs)
    for word, phones in lang.lexicon:
        if not disambig:
            phones = tuple(ph for ph in phones if not ph.startswith("#"))
        cur = loop
        for i, phone in enumerate(phones[:-1]):
            arcs.append((cur, next_state, p[phone], w[word] if i == 0 else 0, 0.0))
            cur, next_state = next_state, next_state + 1
        last_word = w[word] if len(phones) == 1 else 0
        arcs.append((cur, loop, p[phones[-1]], last_word, nosil_cost))
        arcs.append((cur, sil_state, p[phones[-1]], last_word, sil_cost))
    return arcs, start, {loop: 0.0}


def write_lang_files(lang: Lang, out: Path, sil_prob: float, oov_word: str) -> None:
    from asr_kd.kaldi.fst import fst_from_arcs, sort_and_write  # late: lang tables need no Kaldi package

    out.mkdir(parents=True, exist_ok=True)
    _write_table(out / "phones.txt", lang.phone2id)
    _write_table(out / "words.txt", lang.word2id)
    (out / "topo").write_text(make_topo(lang), encoding="utf-8")
    for name, disambig in (("L.fst", False), ("L_disambig.fst", True)):
        sort_and_write(fst_from_arcs(*lexicon_arcs(lang, sil_prob, disambig)), out / name, sort_type="olabel")
    (out / "oov.txt").write_text(oov_word + "\n", encoding="utf-8")
    (out / "oov.int").write_text(f"{lang.word2id[oov_word]}\n", encoding="utf-8")
    _write_phone_lists(lang, out / "phones")


def make_topo(lang: Lang, nonsil_states: int = 3, sil_states: int = 5) -> str:
    """Kaldi's default HMM topology (utils/gen_topo.pl): 3-state left-to-right, 5-state ergodic silence."""
    nonsil = " ".join(str(lang.phone2id[p]) for p in lang.dict_dir.nonsilence_phones)
    sil = " ".join(str(lang.phone2id[p]) for p in lang.dict_dir.silence_phones)
    lines = ["<Topology>", "<TopologyEntry>", "<ForPhones>", nonsil, "</ForPhones>"]
    lines += [f"<State> {i} <PdfClass> {i} <Transition> {i} 0.75 <Transition> {i + 1} 0.25 </State>"
              for i in range(nonsil_states)]
    lines += [f"<State> {nonsil_states} </State>", "</TopologyEntry>",
              "<TopologyEntry>", "<ForPhones>", sil, "</ForPhones>"]
    p = 1.0 / (sil_states - 1)
    lines.append("<State> 0 <PdfClass> 0 " + "".join(f"<Transition> {k} {p} " for k in range(sil_states - 1))
                 + "</State>")
    for i in range(1, sil_states - 1):
        lines.append(f"<State> {i} <PdfClass> {i} " + "".join(f"<Transition> {k} {p} " for k in range(1, sil_states))
                     + "</State>")
    last = sil_states - 1
    lines += [f"<State> {last} <PdfClass> {last} <Transition> {last} 0.75 <Transition> {sil_states} 0.25 </State>",
              f"<State> {sil_states} </State>", "</TopologyEntry>", "</Topology>"]
    return "\n".join(lines) + "\n"


def _write_phone_lists(lang: Lang, out: Path) -> None:
    """phones/*.txt and *.int as prepare_lang.sh writes them (sets/roots: one line per phone set)."""
    d, p = lang.dict_dir, lang.phone2id
    out.mkdir(parents=True, exist_ok=True)
    disambig = [f"#{i}" for i in range(lang.max_disambig + 1)]
    lists = {"silence": d.silence_phones, "nonsilence": d.nonsilence_phones, "optional_silence": [d.optional_silence],
             "context_indep": d.silence_phones, "disambig": disambig, "wdisambig_phones": ["#0"]}
    for name, phones in lists.items():
        _write_lines(out, name, [[ph] for ph in phones], p)
    sets = d.silence_sets + d.nonsilence_sets
    _write_lines(out, "sets", sets, p)
    _write_lines(out, "extra_questions", [], p)
    (out / "align_lexicon.txt").write_text("".join(f"{w} {w} {' '.join(ph)}\n" for w, ph in d.lexicon), encoding="utf-8")
    (out / "roots.txt").write_text("".join(f"shared split {' '.join(s)}\n" for s in sets), encoding="utf-8")
    (out / "roots.int").write_text("".join(f"shared split {' '.join(str(p[x]) for x in s)}\n" for s in sets),
                                   encoding="utf-8")
    (out / "wdisambig_words.txt").write_text("#0\n", encoding="utf-8")
    (out / "wdisambig_words.int").write_text(f"{lang.word2id['#0']}\n", encoding="utf-8")


def _write_lines(out: Path, name: str, rows: list[list[str]], table: dict[str, int]) -> None:
    (out / f"{name}.txt").write_text("".join(" ".join(r) + "\n" for r in rows), encoding="utf-8")
    (out / f"{name}.int").write_text("".join(" ".join(str(table[x]) for x in r) + "\n" for r in rows),
                                     encoding="utf-8")


def _write_table(path: Path, table: dict[str, int]) -> None:
    path.write_text("".join(f"{sym} {i}\n" for sym, i in table.items()), encoding="utf-8")


def read_symbol_table(path: str | os.PathLike) -> dict[str, int]:
    """A Kaldi symbol table (`symbol id` per line) as symbol -> id."""
    table = {}
    for lineno, line in read_lines(Path(path)):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise AsrKdError(f"{path}:{lineno}: expected 'symbol id', got {line!r}")
        table[fields[0]] = int(fields[1])
    return table


def lm_vocabulary(lang_dir: str | os.PathLike) -> list[str]:
    """Words an LM should cover: all lexicon words except the OOV word and silence-only words (!SIL)."""
    lang_dir = Path(lang_dir)
    silence = set((lang_dir / "phones/silence.txt").read_text(encoding="utf-8").split())
    oov = (lang_dir / "oov.txt").read_text(encoding="utf-8").strip()
    prons = read_align_lexicon(lang_dir / "phones/align_lexicon.txt")
    spoken = {word for word, options in prons.items() if any(ph not in silence for pron in options for ph in pron)}
    return sorted(spoken - {oov})


def read_align_lexicon(path: str | os.PathLike) -> dict[str, list[tuple[str, ...]]]:
    """phones/align_lexicon.txt (`word word phone...` per line) -> word -> its pronunciations (phone names)."""
    prons: dict[str, list[tuple[str, ...]]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 3:
            prons.setdefault(fields[0], []).append(tuple(fields[2:]))
    return prons

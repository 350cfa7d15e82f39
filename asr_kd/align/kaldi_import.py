"""Import alignments made by Kaldi into an alignment store (docs/ARTIFACTS.md, source "kaldi").

Inputs: `ali.*.gz` (ark of transition-id vectors, binary or text, gzipped or not) with the
`final.mdl` that made them (binary or text; only its transition model is read, so the GMM
part is never parsed), or `ali-to-pdf` output (`utt pdf pdf ...`) without a model.
"""
from __future__ import annotations

import glob
import gzip
import logging
import struct
from pathlib import Path

import numpy as np

from asr_kd.align.alignment import frame_labels, write_alignment_store
from asr_kd.align.graphs import load_lang
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- int-vector archives

def read_int_vector_ark(path: str | Path) -> dict[str, np.ndarray]:
    """A Kaldi archive of int32 vectors (`ark:` binary or text, optionally gzipped) as {utt: array}."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    out, pos = {}, 0
    while pos < len(data):
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if pos >= len(data):
            break
        end = data.find(b" ", pos)
        if end < 0:
            raise AsrKdError(f"{path}: truncated archive after byte {pos}")
        key = data[pos:end].decode("utf-8")
        if data[end + 1:end + 3] == b"\0B":
            values, pos = _binary_int_vector(data, end + 3, path, key)
        else:
            line_end = data.find(b"\n", end)
            line_end = len(data) if line_end < 0 else line_end
            try:
                values = np.array(data[end + 1:line_end].split(), dtype=np.int32)
            except ValueError as e:
                raise AsrKdError(f"{path}: utterance {key}: not a list of integers: {e}") from e
            pos = line_end + 1
        if key in out:
            raise AsrKdError(f"{path}: utterance {key} appears twice")
        out[key] = values
    return out


def _binary_int_vector(data: bytes, pos: int, path, key) -> tuple[np.ndarray, int]:
    """BasicVectorHolder<int32> binary: size as basic type, then each element as basic type (\\x04 + int32)."""
    if data[pos:pos + 1] != b"\x04":
        raise AsrKdError(f"{path}: utterance {key}: not an int32 vector")
    (size,) = struct.unpack_from("<i", data, pos + 1)
    pos += 5
    raw = np.frombuffer(data, dtype=np.uint8, count=5 * size, offset=pos).reshape(size, 5)
    if size and (raw[:, 0] != 4).any():
        raise AsrKdError(f"{path}: utterance {key}: malformed int32 vector")
    values = np.ascontiguousarray(raw[:, 1:]).view("<i4").reshape(-1).astype(np.int32)
    return values, pos + 5 * size


def write_int_vector_ark(path: str | Path, items: dict[str, np.ndarray], binary: bool = True) -> None:
    """Write a Kaldi int32-vector archive (gzipped if `path` ends in .gz): the format of `ali.*.gz`."""
    chunks = []
    for key, values in items.items():
        values = np.asarray(values, np.int32)
        if binary:
            body = np.zeros((len(values), 5), np.uint8)
            body[:, 0] = 4
            body[:, 1:] = values.astype("<i4").view(np.uint8).reshape(-1, 4)
            chunks.append(key.encode() + b" \0B\x04" + struct.pack("<i", len(values)) + body.tobytes())
        else:
            chunks.append(f"{key} {' '.join(map(str, values))}\n".encode())
    data = b"".join(chunks)
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


# ---------------------------------------------------------------- transition model of a Kaldi final.mdl

class KaldiTransitions:
    """tid -> (pdf, phone, hmm_state) arrays read from a Kaldi model's <TransitionModel> (binary or text)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        data = self.path.read_bytes()
        if data.startswith(b"\0B"):
            entries, tuples = _BinaryReader(data[2:], self.path).transition_model()
        else:
            entries, tuples = _text_transition_model(data.decode("utf-8", "replace"), self.path)
        pdf, phone, hmm_state = [0], [0], [0]
        for p, h, forward_pdf, self_loop_pdf in tuples:
            for dst, _ in entries[p][h][2]:
                pdf.append(self_loop_pdf if dst == h else forward_pdf)
                phone.append(p)
                hmm_state.append(h)
        self.pdf, self.phone, self.hmm_state = (np.array(v, np.int32) for v in (pdf, phone, hmm_state))
        self.num_pdfs = int(max(max(t[2], t[3]) for t in tuples)) + 1

    def check(self, tids: np.ndarray, utt: str) -> None:
        if len(tids) and (tids.min() < 1 or tids.max() >= len(self.pdf)):
            raise AsrKdError(f"utterance {utt}: transition id out of range [1, {len(self.pdf) - 1}] "
                             f"of {self.path}: alignment and model do not match")


def _text_transition_model(text: str, path: Path):
    import kaldi_hmm_gmm as khg  # only for the text topology parser

    try:
        topo_text = text[text.index("<Topology>"): text.index("</Topology>") + len("</Topology>")]
        topo = khg.HmmTopology()
        topo.read(topo_text)
        tokens = text[text.index("</Topology>"):].split()
        kind = tokens[1]
        width = 4 if kind == "<Tuples>" else 3
        size = int(tokens[2])
        values = [int(v) for v in tokens[3: 3 + width * size]]
    except (ValueError, RuntimeError) as e:
        raise AsrKdError(f"{path}: not a Kaldi model with a text transition model: {e}") from e
    entries = {p: [(s.forward_pdf_class, s.self_loop_pdf_class, list(s.transitions))
                   for s in topo.topology_for_phone(p)] for p in topo.phones}
    rows = [values[i * width:(i + 1) * width] for i in range(size)]
    return entries, [(r[0], r[1], r[2], r[3] if width == 4 else r[2]) for r in rows]


class _BinaryReader:
    """Just enough of Kaldi's binary format for HmmTopology + TransitionModel tuples."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def token(self) -> str:
        end = self.data.index(b" ", self.pos)
        tok, self.pos = self.data[self.pos:end].decode(), end + 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.token()
        if got != tok:
            raise AsrKdError(f"{self.path}: expected {tok} at byte {self.pos}, got {got!r}")

    def basic(self, fmt: str = "<i"):
        (value,) = struct.unpack_from(fmt, self.data, self.pos + 1)
        self.pos += 1 + struct.calcsize(fmt)
        return value

    def int_vector(self) -> list[int]:
        (n,) = struct.unpack_from("<i", self.data, self.pos + 1)
        values = list(struct.unpack_from(f"<{n}i", self.data, self.pos + 5))
        self.pos += 5 + 4 * n
        return values

    def transition_model(self):
        self.expect("<TransitionModel>")
        self.expect("<Topology>")
        phones, phone2idx = self.int_vector(), self.int_vector()
        size, is_hmm = self.basic(), True
        if size == -1:
            size, is_hmm = self.basic(), False
        topo_entries = []
        for _ in range(size):
            states = []
            for _ in range(self.basic()):
                forward = self.basic()
                self_loop = forward if is_hmm else self.basic()
                trans = [(self.basic(), self.basic("<f")) for _ in range(self.basic())]
                states.append((forward, self_loop, trans))
            topo_entries.append(states)
        self.expect("</Topology>")
        kind = self.token()
        tuples = []
        for _ in range(self.basic()):
            p, h, f = self.basic(), self.basic(), self.basic()
            tuples.append((p, h, f, self.basic() if kind == "<Tuples>" else f))
        return {p: topo_entries[phone2idx[p]] for p in phones}, tuples


# ---------------------------------------------------------------- import

def import_kaldi_alignment(ali: str | Path, model_path: str | Path | None, feats: RaggedStore | str | Path,
                           out_dir: str | Path, *, num_pdfs: int | None = None,
                           lang_dir: str | Path | None = None) -> RaggedStore:
    """Kaldi alignments -> alignment store. With `model_path` the archives hold transition ids
    (`ali.*.gz`); without, pdf ids (`ali-to-pdf` output) and `num_pdfs` should be given.
    `lang_dir` (optional) names the phones in the CTM and gives the silence phones for the stats."""
    feats = feats if isinstance(feats, RaggedStore) else RaggedStore(feats)
    files = sorted(glob.glob(str(ali))) or ([ali] if Path(ali).is_file() else [])
    if not files:
        raise AsrKdError(f"{ali}: no alignment file matches")
    entries: dict[str, np.ndarray] = {}
    for f in files:
        for utt, values in read_int_vector_ark(f).items():
            if utt in entries:
                raise AsrKdError(f"{f}: utterance {utt} also appears in another alignment file")
            if utt not in feats:
                raise AsrKdError(f"{f}: utterance {utt} is not in the feature store {feats.path}")
            if len(values) != feats.num_rows(utt):
                raise AsrKdError(f"{f}: utterance {utt}: alignment has {len(values)} frames, features "
                                 f"{feats.path} have {feats.num_rows(utt)} (different frame shift or snip-edges?)")
            entries[utt] = values
    if model_path:
        trans = KaldiTransitions(model_path)
        for utt, tids in entries.items():
            trans.check(tids, utt)
        labels = {u: frame_labels(trans.pdf[t], trans.phone[t], trans.hmm_state[t], t) for u, t in entries.items()}
        num_pdfs = trans.num_pdfs
    else:
        top = max(int(v.max()) for v in entries.values() if len(v)) + 1
        if num_pdfs is None:
            log.warning("no --num-pdfs given: using 1 + the largest pdf id seen (%d)", top)
        num_pdfs = num_pdfs or top
        labels = {u: {"pdfs": v} for u, v in entries.items()}
    failed = [u for u in feats if u not in entries]
    if failed:
        log.warning("%d utterances of %s have no alignment (e.g. %s)", len(failed), feats.path, failed[0])
    log.info("imported %d alignments from %d file(s)", len(entries), len(files))
    lang = load_lang(lang_dir) if lang_dir else None
    return write_alignment_store(out_dir, labels, num_pdfs=num_pdfs, feats=feats, model_path=model_path,
                                 source="kaldi", failed=failed, phone_names=lang.phone_names if lang else None,
                                 silence_phones=lang.silence if lang else (),
                                 tree_path=_kaldi_tree(model_path))


def _kaldi_tree(model_path) -> Path | None:
    """The `tree` beside a Kaldi final.mdl (exp/tri1/tree), whose checksum the store records; None if absent."""
    tree = Path(model_path).parent / "tree" if model_path else None
    return tree if tree is not None and tree.is_file() else None

"""Importing Kaldi alignments: ali.*.gz (binary/text ark) with final.mdl, and ali-to-pdf text."""
import struct

import numpy as np
import pytest

from align_synth import make_corpus, make_lang
from asr_kd.align.alignment import align_data
from asr_kd.align.kaldi_import import KaldiTransitions, import_kaldi_alignment, read_int_vector_ark, write_int_vector_ark
from asr_kd.align.mono import MonoConfig, train_mono
from asr_kd.data.store import RaggedStore
from asr_kd.errors import AsrKdError
from asr_kd.kaldi import gmm


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    root = tmp_path_factory.mktemp("imp")
    lang = make_lang(root)
    feats, texts, _ = make_corpus(root, num_utts=12)
    train_mono(feats, texts, lang, root / "mono", MonoConfig(num_iters=4, tot_gauss=20, realign_iters=[1, 2]))
    store = align_data(feats, texts, lang, root / "mono", root / "ali")
    tids = RaggedStore(root / "ali" / "transitions")
    return root, lang, feats, store, {u: np.asarray(tids[u]) for u in tids}


def test_int_vector_ark_binary_and_text_roundtrip(tmp_path):
    items = {"a": np.array([1, 2, 3], np.int32), "b": np.array([], np.int32), "c": np.array([70000, 5], np.int32)}
    for name, binary in (("x.ark", True), ("x.gz", True), ("t.txt", False)):
        write_int_vector_ark(tmp_path / name, items, binary=binary)
        back = read_int_vector_ark(tmp_path / name)
        assert list(back) == list(items) and all((back[k] == items[k]).all() for k in items)
    # the exact bytes Kaldi's Int32VectorWriter writes for "a": key, \0B, size and each value as basic types
    write_int_vector_ark(tmp_path / "one.ark", {"a": items["a"]})
    assert (tmp_path / "one.ark").read_bytes() == b"a \0B\x04\x03\0\0\0\x04\x01\0\0\0\x04\x02\0\0\0\x04\x03\0\0\0"


def test_import_gz_alignments_with_model_equals_own_store(aligned, tmp_path):
    root, lang, feats, store, tids = aligned
    keys = sorted(tids)
    write_int_vector_ark(tmp_path / "ali.1.gz", {k: tids[k] for k in keys[:5]})
    write_int_vector_ark(tmp_path / "ali.2.gz", {k: tids[k] for k in keys[5:]}, binary=False)
    imported = import_kaldi_alignment(tmp_path / "ali.*.gz", root / "mono" / "final.mdl", feats, tmp_path / "out",
                                      lang_dir=lang)
    assert imported.meta["source"] == "kaldi" and imported.meta["num_pdfs"] == store.meta["num_pdfs"]
    assert all((imported[u] == store[u]).all() for u in keys)
    assert (tmp_path / "out" / "ctm.txt").read_text() == (root / "ali" / "ctm.txt").read_text()


def test_import_pdf_text_and_length_mismatch(aligned, tmp_path):
    root, _, feats, store, _ = aligned
    pdfs = {u: np.asarray(store[u]) for u in store}
    write_int_vector_ark(tmp_path / "pdf.txt", pdfs, binary=False)
    imported = import_kaldi_alignment(tmp_path / "pdf.txt", None, feats, tmp_path / "out", num_pdfs=20)
    assert all((imported[u] == store[u]).all() for u in store)
    assert np.isclose(np.load(tmp_path / "out" / "priors.npy").sum(), 1.0)
    bad = dict(pdfs)
    bad["utt003"] = bad["utt003"][:-2]
    write_int_vector_ark(tmp_path / "bad.txt", bad, binary=False)
    with pytest.raises(AsrKdError, match="utt003.*frames"):
        import_kaldi_alignment(tmp_path / "bad.txt", None, feats, tmp_path / "out2", num_pdfs=20)
    assert not (tmp_path / "out2").exists()


def test_binary_kaldi_transition_model_is_read(aligned, tmp_path):
    root, _, _, _, _ = aligned
    tree = gmm.read_tree(root / "mono" / "tree")
    tm, _ = gmm.read_model(root / "mono" / "final.mdl", tree)
    table = gmm.TransitionTable(tm, tree)
    (tmp_path / "final.mdl").write_bytes(kaldi_binary_transition_model(tm, table))
    read = KaldiTransitions(tmp_path / "final.mdl")
    assert (read.pdf == table.pdf).all() and (read.phone == table.phone).all()
    assert (read.hmm_state[1:] == table.hmm_state[1:]).all() and read.num_pdfs == tm.num_pdfs


def kaldi_binary_transition_model(tm, table) -> bytes:
    """TransitionModel::Write(binary=true), written out from Kaldi's hmm-topology.cc / transition-model.cc."""
    tok = lambda s: s.encode() + b" "                                  # noqa: E731
    i32 = lambda v: b"\x04" + struct.pack("<i", v)                    # noqa: E731
    ivec = lambda v: b"\x04" + struct.pack(f"<i{len(v)}i", len(v), *v)  # noqa: E731
    phones = list(tm.topo.phones)
    phone2idx = [-1] * (max(phones) + 1)
    entries = b""
    for idx, p in enumerate(phones):                                  # one topology entry per phone
        phone2idx[p] = idx
        states = tm.topo.topology_for_phone(p)
        entries += i32(len(states))
        for st in states:
            entries += i32(st.forward_pdf_class) + i32(len(st.transitions))
            entries += b"".join(i32(d) + b"\x04" + struct.pack("<f", pr) for d, pr in st.transitions)
    triples = b"".join(i32(int(table.phone[table.state2id[s]])) + i32(int(table.hmm_state[table.state2id[s]]))
                       + i32(int(table.forward_pdf[s])) for s in range(1, table.num_states + 1))
    log_probs = np.asarray(tm.log_probs, np.float32)
    return (b"\0B" + tok("<TransitionModel>") + tok("<Topology>") + ivec(phones) + ivec(phone2idx)
            + i32(len(phones)) + entries + tok("</Topology>") + tok("<Triples>") + i32(table.num_states) + triples
            + tok("</Triples>") + tok("<LogProbs>") + tok("FV") + i32(len(log_probs)) + log_probs.tobytes()
            + tok("</LogProbs>") + tok("</TransitionModel>"))

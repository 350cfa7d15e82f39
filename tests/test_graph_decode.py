"""HCLG construction and decoding on a tiny lexicon + LM + hand-made monophone model with a known best path."""
import json

import numpy as np
import pytest

from asr_kd.errors import AsrKdError
from asr_kd.lang.grammar import make_lang_test
from asr_kd.lang.ngram import train_kneser_ney, write_arpa
from asr_kd.lang.prepare_lang import prepare_lang, read_symbol_table
from tests.test_lang import make_dict

LM_TEXT = ["C AB", "A", "B C", "BEE C AB", "A C"]
FRAMES_PER_STATE = 4


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """lang_test + monophone model (one unit Gaussian per pdf) + HCLG graph."""
    from asr_kd.decode.graph import make_graph
    from asr_kd.kaldi import gmm

    root = tmp_path_factory.mktemp("sys")
    prepare_lang(make_dict(root), root / "lang")
    write_arpa(train_kneser_ney([s.split() for s in LM_TEXT], 2), root / "lm.arpa")
    make_lang_test(root / "lang", root / "lm.arpa", root / "lang_test")
    topo = gmm.read_topology(root / "lang/topo")
    tree, tm, am = gmm.init_mono(topo, np.zeros(2), np.ones(2))
    (root / "mono").mkdir()
    gmm.write_tree(root / "mono/tree", tree)
    gmm.write_model(root / "mono/final.mdl", tm, am, tree)
    make_graph(root / "lang_test", root / "mono", root / "graph")
    table = gmm.TransitionTable(tm, tree)
    pdf_of = {(phone, state): pdf for phone, state, pdf in table.state_lookup()}
    return root, tm.num_pdfs, pdf_of


def synthetic_loglikes(root, num_pdfs, pdf_of, phone_names):
    """A matrix whose best state sequence walks each phone's HMM states in order (4 frames each)."""
    phones = read_symbol_table(root / "lang/phones.txt")
    pdfs = []
    for name in phone_names:
        num_states = 5 if name == "sil" else 3
        pdfs += [pdf_of[(phones[name], s)] for s in range(num_states) for _ in range(FRAMES_PER_STATE)]
    loglikes = np.full((len(pdfs), num_pdfs), -20.0, np.float32)
    loglikes[np.arange(len(pdfs)), pdfs] = 0.0
    return loglikes


def test_graph_dir_contents(system):
    root, _, _ = system
    assert {p.name for p in (root / "graph").iterdir()} >= {"HCLG.fst", "words.txt", "phones.txt", "meta.json"}


@pytest.mark.parametrize("phones, words", [
    (["sil", "k", "ah", "a", "b", "sil"], ["C", "AB"]),
    (["a", "sil", "b"], ["A", "B"]),            # silence splits "a b" (else the word AB)
    (["a", "b"], ["AB"]),
    (["k", "a", "sil", "k", "ah"], ["C", "C"]),  # unseen bigram C C: reached through back-off
])
def test_decoder_finds_known_best_path(system, phones, words):
    from asr_kd.decode.decoder import decode

    root, num_pdfs, pdf_of = system
    hyps = decode({"u1": synthetic_loglikes(root, num_pdfs, pdf_of, phones)}, root / "graph",
                  root / "mono/final.mdl", acoustic_scale=1.0)
    assert hyps["u1"] == words


def test_word_penalty_trades_words_for_acoustic_fit(system):
    from asr_kd.decode.decoder import Decoder

    root, num_pdfs, pdf_of = system
    loglikes = synthetic_loglikes(root, num_pdfs, pdf_of, ["a", "sil", "b"])
    plain = Decoder(root / "graph", root / "mono/final.mdl")
    penalised = Decoder(root / "graph", root / "mono/final.mdl", word_penalty=200.0)
    assert plain.decode_one("u", loglikes, acoustic_scale=0.1)[0] == ["A", "B"]
    assert len(penalised.decode_one("u", loglikes, acoustic_scale=0.1)[0]) < 2  # fewer words, worse fit


SEQS = [["a", "sil", "b"], ["k", "a"], ["a", "b"], ["b", "sil", "k", "ah"], ["sil", "a", "sil"]]


def loglikes_job(system, tmp_path, corrupt: str | None = None):
    """A DecodeJob over a log-likelihood store of SEQS (utterance `corrupt` all NaN), and the matrices."""
    from asr_kd.data.store import write_store
    from asr_kd.decode.decoder import DecodeJob

    root, num_pdfs, pdf_of = system
    loglikes = {f"u{i}": synthetic_loglikes(root, num_pdfs, pdf_of, seq) for i, seq in enumerate(SEQS)}
    if corrupt:
        loglikes[corrupt] = np.full_like(loglikes[corrupt], np.nan)
    write_store(tmp_path / "loglikes", sorted(loglikes.items()))
    return DecodeJob(str(root / "graph"), str(root / "mono/final.mdl"), str(tmp_path / "loglikes")), loglikes


def test_sharded_decode_equals_one_process_for_any_nj(system, tmp_path):
    from asr_kd.decode.decoder import Decoder, decode_all, decode_store
    from asr_kd.parallel import Jobs

    job, loglikes = loglikes_job(system, tmp_path)
    serial, serial_stats = decode_all(Decoder(job.graph_dir, job.model_path), loglikes, 1.0)
    grid = [(1.0, 0.0), (0.1, 0.0), (0.1, 200.0)]
    one, two = decode_store(job, grid, Jobs(nj=1)), decode_store(job, grid, Jobs(nj=2))
    assert one[(1.0, 0.0)][0] == two[(1.0, 0.0)][0] == serial and serial["u0"] == ["A", "B"]
    for setting in grid:
        assert one[setting][0] == two[setting][0]
        assert (two[setting][1].num_utts, two[setting][1].num_frames) == (serial_stats.num_utts, serial_stats.num_frames)
    assert len(two[(0.1, 200.0)][0]["u0"]) < 2  # the penalty reached the workers' decoders


def test_sharded_decode_names_a_bad_utterance(system, tmp_path):
    from asr_kd.decode.decoder import decode_store
    from asr_kd.parallel import Jobs

    job, _ = loglikes_job(system, tmp_path, corrupt="u3")
    for nj in (1, 2):  # a worker's error reaches the caller intact
        with pytest.raises(AsrKdError, match="utterance u3: log-likelihoods contain NaN"):
            decode_store(job, [(1.0, 0.0)], Jobs(nj=nj))


def test_killed_decode_worker_fails_the_decode(system, tmp_path, monkeypatch):
    import os
    import signal

    from asr_kd.decode import decoder as decoder_module
    from asr_kd.parallel import Jobs

    job, _ = loglikes_job(system, tmp_path)
    real = decoder_module._decode_timed

    def die_on_u3(decoder, utt, matrix, scale):  # forked workers inherit the patch
        if utt == "u3":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(decoder, utt, matrix, scale)

    monkeypatch.setattr(decoder_module, "_decode_timed", die_on_u3)
    with pytest.raises(AsrKdError, match="worker process was lost"):
        decoder_module.decode_store(job, [(1.0, 0.0)], Jobs(nj=2))


def test_decode_on_a_dask_local_cluster(system, tmp_path):
    distributed = pytest.importorskip("distributed")
    from asr_kd.decode.decoder import decode_store
    from asr_kd.parallel import Jobs

    job, _ = loglikes_job(system, tmp_path)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        on_dask = decode_store(job, [(1.0, 0.0)], Jobs(nj=3, dask_scheduler=cluster.scheduler_address))
    assert on_dask[(1.0, 0.0)][0] == decode_store(job, [(1.0, 0.0)], Jobs(nj=1))[(1.0, 0.0)][0]


def test_decoder_rejects_wrong_pdf_count(system):
    from asr_kd.decode.decoder import decode

    root, num_pdfs, _ = system
    with pytest.raises(AsrKdError, match="utterance bad"):
        decode({"bad": np.zeros((10, num_pdfs + 1), np.float32)}, root / "graph", root / "mono/final.mdl")


def test_gmm_loglikes_match_kaldi(system):
    from asr_kd.decode.decoder import gmm_loglikes
    from asr_kd.kaldi import gmm

    root, _, _ = system
    tree = gmm.read_tree(root / "mono/tree")
    _, am = gmm.read_model(root / "mono/final.mdl", tree)
    rng = np.random.default_rng(0)
    gmms = [gmm.make_gmm(rng.dirichlet(np.ones(3)), rng.normal(size=(3, 2)), rng.uniform(0.5, 2, (3, 2)))
            for _ in range(am.num_pdfs)]
    am = gmm.make_am(gmms)
    feats = rng.normal(size=(7, 2)).astype(np.float32)
    ours = gmm_loglikes(am, {"u": feats})["u"]
    for t in (0, 6):
        for pdf in (0, am.num_pdfs - 1):
            assert ours[t, pdf] == pytest.approx(am.get_pdf(pdf).log_likelihood(feats[t]), abs=1e-3)


def tuned_decode_args(system, tmp_path) -> list[str]:
    """`asr-kd decode` arguments for two utterances used as both dev and test; output in tmp_path/decode."""
    from asr_kd.data.store import write_store

    root, num_pdfs, pdf_of = system
    utts = {"u1": (["sil", "k", "ah", "a", "b", "sil"], "C AB"), "u2": (["a", "sil", "b"], "A B")}
    write_store(tmp_path / "ll", [(u, synthetic_loglikes(root, num_pdfs, pdf_of, ph)) for u, (ph, _) in utts.items()])
    (tmp_path / "text").write_text("".join(f"{u} {words}\n" for u, (_, words) in utts.items()))
    return ["decode", str(root / "graph"), str(root / "mono"), str(tmp_path / "decode"), "--loglikes",
            str(tmp_path / "ll"), "--text", str(tmp_path / "text"), "--dev-loglikes", str(tmp_path / "ll"),
            "--dev-text", str(tmp_path / "text")]


def test_decode_cli_tunes_on_dev_and_scores(system, tmp_path):
    from asr_kd.cli import main

    out = tmp_path / "decode"
    assert main(tuned_decode_args(system, tmp_path) + ["--acoustic-scales", "0.5,1.0", "--word-penalties", "0,1"]) == 0
    summary = json.loads((out / "wer.json").read_text())
    assert (summary["errors"], summary["words"]) == (0, 4)
    tuning = json.loads((out / "tuning.json").read_text())
    assert len(tuning["dev"]) == 4  # 2 scales x 2 penalties, all error-free: ties go to the smaller scale
    assert (tuning["chosen_acoustic_scale"], tuning["chosen_word_penalty"]) == (0.5, 0.0)
    assert main(["score", str(tmp_path / "text"), str(out / "hyp.txt"), str(tmp_path / "score")]) == 0



def triphone_tree(phones: dict[str, int]):
    """A context-width-3 tree with one context split: state 0 of `a` after `k` has its own pdf.

    Returns (tree, pdf of `a` state 0 after `k`, pdf of `a` state 0 elsewhere).
    """
    from asr_kd.align.tree import CENTER, LEFT, PDF_CLASS, context_dependency_bytes
    from asr_kd.kaldi.gmm import tree_from_bytes

    next_pdf = iter(range(100))
    table = [None] * (max(phones.values()) + 1)
    for name in ("sil", "a", "ah", "b", "k"):
        classes = [("CE", next(next_pdf)) for _ in range(5 if name == "sil" else 3)]
        table[phones[name]] = ("TE", PDF_CLASS, classes)
    a_other, a_after_k = table[phones["a"]][2][0][1], next(next_pdf)
    table[phones["a"]][2][0] = ("SE", LEFT, [phones["k"]], ("CE", a_after_k), ("CE", a_other))
    return tree_from_bytes(context_dependency_bytes(("TE", CENTER, table))), a_after_k, a_other


def test_triphone_graph_follows_left_context(system, tmp_path):
    """Acoustics favour the after-k pdf for every `a`; the graph must still use the other one
    where `a` starts the utterance, and the after-k one in `k a`."""
    from asr_kd.decode.decoder import Decoder
    from asr_kd.decode.graph import make_graph
    from asr_kd.kaldi import gmm

    root, _, _ = system
    phones = read_symbol_table(root / "lang/phones.txt")
    tree, a_after_k, a_other = triphone_tree(phones)
    assert tree.context_width == 3
    tm = gmm.TransitionModel(tree, gmm.read_topology(root / "lang/topo"))
    am = gmm.make_am([gmm.make_gmm(np.ones(1), np.zeros((1, 2)), np.ones((1, 2)))] * tree.num_pdfs)
    (tmp_path / "tri").mkdir()
    gmm.write_tree(tmp_path / "tri/tree", tree)
    gmm.write_model(tmp_path / "tri/final.mdl", tm, am, tree)
    make_graph(root / "lang_test", tmp_path / "tri", tmp_path / "graph")
    pdf_of = {(phone, state): pdf for phone, state, pdf in gmm.TransitionTable(tm, tree).state_lookup()}
    decoder = Decoder(tmp_path / "graph", tmp_path / "tri/final.mdl")
    pdf_of_tid = np.asarray(tm.id2pdf_id)
    for utt, seq, words, a_start, expected_pdf in (("k_a", ["k", "a"], ["C"], 3, a_after_k),
                                                   ("a_b", ["a", "b"], ["AB"], 0, a_other)):
        pdf_of[(phones["a"], 0)] = a_after_k
        loglikes = synthetic_loglikes(root, tm.num_pdfs, pdf_of, seq)
        a_state0 = slice(a_start * FRAMES_PER_STATE, (a_start + 1) * FRAMES_PER_STATE)
        loglikes[a_state0, a_other] = -1.0  # worse than after-k (0.0) but far better than the rest
        hyp, tids, ok = decoder.decode_with_alignment(utt, loglikes, acoustic_scale=1.0)
        assert ok and hyp == words
        assert set(pdf_of_tid[tids[a_state0]]) == {expected_pdf}

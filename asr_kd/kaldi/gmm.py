"""Adapter over kaldi-hmm-gmm: HMM topology, trees, transition model, diagonal GMMs, forced alignment.

All calls into kaldi_hmm_gmm for GMM-HMM training live here; the align stage speaks numpy.
Models are written in Kaldi's text format (`final.mdl` = TransitionModel + AmDiagGmm, readable by
`gmm-copy`), trees in Kaldi's binary format (`tree`, readable by `tree-info`). The bindings expose
no model/tree reader and no tree builder, so both are done here from Kaldi's documented layouts
(a tree is loaded through ContextDependency's pickle state = its binary serialisation).
Measured trap (DESIGN.md §3): alignment with a weak model can fail silently (empty result), so
`align_compiled` returns None unless the alignment covers every frame.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Sequence

import asr_kd.kaldi  # noqa: F401  (import order of the k2-fsa packages)
import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path

TransitionModel = khg.TransitionModel
AmDiagGmm = khg.AmDiagGmm
ContextDependency = khg.ContextDependency
HmmTopology = khg.HmmTopology


# ---------------------------------------------------------------- topology and trees

def read_topology(path: str | os.PathLike) -> khg.HmmTopology:
    """Read a Kaldi text `topo` file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise AsrKdError(f"{path}: cannot read HMM topology: {e}") from e
    topo = khg.HmmTopology()
    try:
        topo.read(text)
    except RuntimeError as e:
        raise AsrKdError(f"{path}: not a Kaldi HMM topology: {e}") from e
    return topo


def mono_tree(topo: khg.HmmTopology, shared_phones: Sequence[Sequence[int]] | None = None) -> khg.ContextDependency:
    """Monophone tree (context width 1); phones in one `shared_phones` set share their pdfs."""
    num_classes = topo.get_phone_to_num_pdf_classes()
    if shared_phones:
        return khg.monophone_context_dependency_shared([list(s) for s in shared_phones], num_classes)
    return khg.monophone_context_dependency(list(topo.phones), num_classes)


def tree_from_bytes(data: bytes) -> khg.ContextDependency:
    """A ContextDependency from Kaldi's binary tree serialisation (without the '\\0B' header)."""
    tree = khg.ContextDependency.__new__(khg.ContextDependency)
    tree.__setstate__((list(struct.unpack(f"{len(data)}b", data)),))
    return tree


def tree_to_bytes(tree: khg.ContextDependency) -> bytes:
    (signed,) = tree.__getstate__()
    return struct.pack(f"{len(signed)}b", *signed)


def write_tree(path: str | os.PathLike, tree: khg.ContextDependency) -> None:
    """Write a tree in Kaldi binary format (the `tree` file of a Kaldi exp dir), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"\0B" + tree_to_bytes(tree))


def read_tree(path: str | os.PathLike) -> khg.ContextDependency:
    """Read a Kaldi binary `tree` file."""
    if not Path(path).is_file():
        raise AsrKdError(f"{path}: tree file not found (is this a GMM dir from train-mono / train-tri?)")
    data = Path(path).read_bytes()
    if not data.startswith(b"\0BContextDependency "):
        raise AsrKdError(f"{path}: not a Kaldi binary tree file (convert with `copy-tree --binary=true`)")
    try:
        return tree_from_bytes(data[2:])
    except RuntimeError as e:
        raise AsrKdError(f"{path}: corrupt tree: {e}") from e


# ---------------------------------------------------------------- models

def make_gmm(weights: np.ndarray, means: np.ndarray, variances: np.ndarray) -> khg.DiagGmm:
    """A DiagGmm from (nmix,), (nmix, dim), (nmix, dim) arrays."""
    weights = np.asarray(weights, np.float32).reshape(-1)
    means = np.asarray(means, np.float32).reshape(len(weights), -1)
    gmm = khg.DiagGmm(len(weights), means.shape[1])
    gmm.set_weights(weights)
    gmm.set_invvars_and_means(1.0 / np.asarray(variances, np.float32).reshape(means.shape), means)
    gmm.compute_gconsts()
    return gmm


def make_am(gmms: Sequence[khg.DiagGmm]) -> khg.AmDiagGmm:
    am = khg.AmDiagGmm()
    for gmm in gmms:
        am.add_pdf(gmm)
    return am


def init_mono(topo: khg.HmmTopology, mean: np.ndarray, var: np.ndarray,
              shared_phones: Sequence[Sequence[int]] | None = None):
    """gmm-init-mono: one Gaussian per pdf at the global mean/variance. Returns (tree, tm, am)."""
    tree = mono_tree(topo, shared_phones)
    gmm = make_gmm(np.ones(1), mean[None], var[None])
    am = make_am([gmm] * tree.num_pdfs)
    return tree, khg.TransitionModel(tree, topo), am


def write_model(path: str | os.PathLike, tm: khg.TransitionModel, am: khg.AmDiagGmm,
                tree: khg.ContextDependency) -> None:
    """Write `final.mdl` in Kaldi text format (TransitionModel then AmDiagGmm), atomically."""
    parts = ["<TransitionModel> \n", str(tm.topo).strip() + " \n", "<Triples> " if tm.topo.is_hmm else "<Tuples> "]
    table = TransitionTable(tm, tree)
    parts.append(f"{table.num_states} \n")
    for s in range(1, table.num_states + 1):
        tid = table.state2id[s]
        row = [table.phone[tid], table.hmm_state[tid], table.forward_pdf[s]]
        if not tm.topo.is_hmm:
            row.append(table.self_loop_pdf[s])
        parts.append(" ".join(map(str, row)) + " \n")
    parts.append("</Triples> \n" if tm.topo.is_hmm else "</Tuples> \n")
    parts.append("<LogProbs> \n" + _vec(np.asarray(tm.log_probs)) + "</LogProbs> \n</TransitionModel> \n")
    parts.append(f"<DIMENSION> {am.dim} <NUMPDFS> {am.num_pdfs} ")
    for p in range(am.num_pdfs):
        g = am.get_pdf(p)
        parts.append("<DiagGMM> \n<GCONSTS> " + _vec(g.gconsts) + "<WEIGHTS> " + _vec(g.weights)
                     + "<MEANS_INVVARS> " + _mat(g.means_invvars) + "<INV_VARS> " + _mat(g.inv_vars) + "</DiagGMM> \n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(parts), encoding="utf-8")


def _vec(v) -> str:
    return " [ " + " ".join(repr(float(x)) for x in np.asarray(v).reshape(-1)) + " ]\n"


def _mat(m) -> str:
    rows = ["  " + " ".join(repr(float(x)) for x in row) for row in np.asarray(m)]
    return " [\n" + "\n".join(rows) + " ]\n"


def read_model(path: str | os.PathLike, tree: khg.ContextDependency):
    """Read a Kaldi text-format GMM model written by `write_model` (or `gmm-copy --binary=false`).

    The transition model is rebuilt from `tree` and the model's topology, then its probabilities
    are restored; a model that does not belong to `tree` is refused. Returns (tm, am).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AsrKdError(f"{path}: cannot read a text-format Kaldi model "
                         f"(binary models: convert with `gmm-copy --binary=false`): {e}") from e
    try:
        head, gmm_text = text.split("</TransitionModel>", 1)
        topo = khg.HmmTopology()
        topo.read(head[head.index("<Topology>"): head.index("</Topology>") + len("</Topology>")])
        log_probs = _floats(head[head.index("<LogProbs>"):])
    except (ValueError, RuntimeError) as e:
        raise AsrKdError(f"{path}: malformed transition model: {e}") from e
    tm = khg.TransitionModel(tree, topo)
    if len(log_probs) != tm.num_transition_ids + 1:
        raise AsrKdError(f"{path}: model has {len(log_probs) - 1} transition ids, tree+topology give "
                         f"{tm.num_transition_ids}: model and tree do not match")
    return with_log_probs(tm, log_probs), _parse_am(gmm_text, path)


def _floats(text: str) -> np.ndarray:
    start, end = text.index("["), text.index("]")
    return np.array(text[start + 1: end].split(), dtype=np.float64)


def _parse_am(text: str, path) -> khg.AmDiagGmm:
    tokens = text.split()
    dim, num_pdfs = int(tokens[tokens.index("<DIMENSION>") + 1]), int(tokens[tokens.index("<NUMPDFS>") + 1])
    gmms, chunks = [], text.split("<DiagGMM>")[1:]
    if len(chunks) != num_pdfs:
        raise AsrKdError(f"{path}: {len(chunks)} GMMs but <NUMPDFS> {num_pdfs}")
    for chunk in chunks:
        weights = _floats(chunk[chunk.index("<WEIGHTS>"):])
        means_invvars = _floats(chunk[chunk.index("<MEANS_INVVARS>"):]).reshape(-1, dim)
        inv_vars = _floats(chunk[chunk.index("<INV_VARS>"):]).reshape(-1, dim)
        gmms.append(make_gmm(weights, means_invvars / inv_vars, 1.0 / inv_vars))
    return make_am(gmms)


def with_log_probs(tm: khg.TransitionModel, log_probs: np.ndarray) -> khg.TransitionModel:
    """A copy of `tm` with these transition log-probs (and Kaldi's derived non-self-loop ones).

    Goes through the pickle state into a fresh object: `__setstate__` on a constructed one is ignored.
    """
    state = list(tm.__getstate__())
    state2id = np.asarray(tm.state2id)
    non_self = np.zeros(tm.num_transition_states + 1)
    for s in range(1, tm.num_transition_states + 1):
        for tid in range(state2id[s], state2id[s + 1]):
            if tm.is_self_loop(tid):
                non_self[s] = np.log1p(-min(np.exp(log_probs[tid]), 1 - 1e-10))
    state[6], state[7] = [float(x) for x in log_probs], [float(x) for x in non_self]
    out = khg.TransitionModel.__new__(khg.TransitionModel)
    out.__setstate__(tuple(state))
    return out


class TransitionTable:
    """Per-transition-id arrays (index 0 unused) of a TransitionModel, for vectorised lookups.

    The bindings do not expose the (phone, hmm_state, pdf) tuples, so the HMM state of each
    transition state is recovered from the tree's pdf -> (phone, pdf class) map and the topology.
    """

    def __init__(self, tm: khg.TransitionModel, tree: khg.ContextDependency):
        num_tids = tm.num_transition_ids
        self.num_states = tm.num_transition_states
        self.state2id = np.asarray(tm.state2id, dtype=np.int64)       # len num_states + 2
        self.id2state = np.asarray(tm.id2state, dtype=np.int64)       # len num_tids + 1
        self.pdf = np.asarray(tm.id2pdf_id, dtype=np.int32)           # tid -> pdf
        self.phone = np.array([0] + [tm.transition_id_to_phone(t) for t in range(1, num_tids + 1)], np.int32)
        self.self_loop = np.array([False] + [tm.is_self_loop(t) for t in range(1, num_tids + 1)])
        self.trans_index = (np.arange(num_tids + 1) - self.state2id[self.id2state]).astype(np.int32)
        self.forward_pdf = np.zeros(self.num_states + 1, np.int32)
        self.self_loop_pdf = np.zeros(self.num_states + 1, np.int32)
        for tid in range(1, num_tids + 1):
            target = self.self_loop_pdf if self.self_loop[tid] else self.forward_pdf
            target[self.id2state[tid]] = self.pdf[tid]
        for s in range(1, self.num_states + 1):  # states without a self-loop share the forward pdf
            if not self.self_loop[self.state2id[s]: self.state2id[s + 1]].any():
                self.self_loop_pdf[s] = self.forward_pdf[s]
        self.hmm_state = self._hmm_states(tm.topo, tree)

    def _hmm_states(self, topo, tree) -> np.ndarray:
        phones = list(topo.phones)
        pdf_info = tree.get_pdf_info(phones, topo.get_phone_to_num_pdf_classes())
        pdf_class = {(phone, pdf): cls for pdf, pairs in enumerate(pdf_info) for phone, cls in pairs}
        class_to_state = {phone: {st.forward_pdf_class: i for i, st in enumerate(topo.topology_for_phone(phone))
                                  if st.forward_pdf_class >= 0} for phone in phones}
        out = np.zeros(len(self.pdf), np.int32)
        for s in range(1, self.num_states + 1):
            first = self.state2id[s]
            phone = int(self.phone[first])
            cls = pdf_class[(phone, int(self.forward_pdf[s]))]
            out[first: self.state2id[s + 1]] = class_to_state[phone][cls]
        return out

    def state_lookup(self) -> dict[tuple[int, int, int], int]:
        """(phone, hmm_state, forward_pdf) -> transition state."""
        return {(int(self.phone[self.state2id[s]]), int(self.hmm_state[self.state2id[s]]), int(self.forward_pdf[s])): s
                for s in range(1, self.num_states + 1)}


# ---------------------------------------------------------------- statistics and re-estimation

def new_accs(am: khg.AmDiagGmm, tm: khg.TransitionModel):
    """Fresh (GMM, transition) accumulators for one EM pass."""
    accs = khg.AccumAmDiagGmm()
    accs.init(am, khg.GmmUpdateFlags.kGmmAll)
    return accs, tm.init_stats()


def accumulate_ali(accs, trans_accs: np.ndarray, am, tm, table: TransitionTable,
                   feats: np.ndarray, tids: np.ndarray) -> tuple[float, np.ndarray]:
    """gmm-acc-stats-ali for one utterance. Returns (total log-likelihood, updated trans_accs)."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    pdfs = table.pdf[tids]
    loglike = 0.0
    for t in range(len(tids)):
        loglike += accs.accumulate_for_gmm(am, feats[t], int(pdfs[t]), 1.0)
    np.add.at(trans_accs, tids, 1.0)
    return loglike, trans_accs


def estimate(am, tm, accs, trans_accs: np.ndarray, *, mixup: int = 0, power: float = 0.25,
             min_gaussian_occupancy: float = 10.0, perturb_factor: float = 0.01, min_count: float = 20.0) -> dict:
    """gmm-est: transition + GMM ML update, then split Gaussians up to `mixup` in total."""
    t_impr, t_count = tm.mle_update(trans_accs, khg.MleTransitionUpdateConfig())
    opts = khg.MleDiagGmmOptions()
    opts.min_gaussian_occupancy = min_gaussian_occupancy
    avg_like = accs.tot_log_like / max(accs.tot_count, 1.0)
    g_impr, g_count = khg.mle_am_diag_gmm_update(opts, accs, int(khg.GmmUpdateFlags.kGmmAll), am)
    if mixup > am.num_gauss:
        occs = np.array([accs.get_acc(i).occupancy.sum() for i in range(accs.num_accs)], np.float32)
        am.split_by_count(occs, mixup, perturb_factor, power, min_count)
    return {"avg_loglike": float(avg_like), "gmm_impr_per_frame": float(g_impr / max(g_count, 1.0)),
            "trans_impr_per_frame": float(t_impr / max(t_count, 1.0)), "num_gauss": int(am.num_gauss),
            "frames": float(accs.tot_count)}


# ---------------------------------------------------------------- graphs and alignment

def graph_compiler(tm, tree, lex_fst, disambig_ids: Sequence[int]) -> khg.TrainingGraphCompiler:
    """compile-train-graphs: the compiler for per-utterance graphs from L.fst (olabel-sorted here)."""
    kaldifst.arcsort(lex_fst, sort_type="olabel")
    return khg.TrainingGraphCompiler(trans_model=tm, ctx_dep=tree, lex_fst=lex_fst,
                                     disambig_syms=list(disambig_ids), opts=khg.TrainingGraphCompilerOptions())


def equal_align(graph, num_frames: int, seed: int = 0) -> np.ndarray | None:
    """align-equal-compiled: a path of `graph` with equal-length segments; None if impossible."""
    ok, path_fst = kaldifst.equal_align(ifst=graph, length=num_frames, rand_seed=seed, num_retries=10)
    if not ok:
        return None
    ok, tids, _, _ = kaldifst.get_linear_symbol_sequence(path_fst)
    tids = np.asarray(tids, np.int32)
    return tids if ok and len(tids) == num_frames else None


def align_compiled(am, tm, graph, feats: np.ndarray, *, beam: float, retry_beam: float,
                   acoustic_scale: float = 0.1, transition_scale: float = 1.0,
                   self_loop_scale: float = 0.1) -> tuple[np.ndarray | None, float]:
    """gmm-align-compiled for one utterance. Returns (tids or None on failure, log-likelihood)."""
    fst = graph.copy()
    khg.add_transition_probs(trans_model=tm, transition_scale=transition_scale,
                             self_loop_scale=self_loop_scale, fst=fst)
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    decodable = khg.DecodableAmDiagGmmScaled(am=am, tm=tm, feats=feats, scale=acoustic_scale)
    config = khg.AlignConfig(beam=beam, retry_beam=retry_beam, careful=False)
    _, _, _, like, _, tids, _ = khg.align_utterance_wrapper(
        config=config, utt="", acoustic_scale=acoustic_scale, fst=fst, decodable=decodable,
        num_done=0, num_error=0, num_retried=0, tot_like=0.0, frame_count=0)
    tids = np.asarray(tids, np.int32)
    return (tids if len(tids) == len(feats) else None), float(like)

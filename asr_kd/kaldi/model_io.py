"""GMM acoustic models: Kaldi text `final.mdl` I/O and the stacked numpy view of an AmDiagGmm.

`final.mdl` = TransitionModel + AmDiagGmm in Kaldi's text format (readable by `gmm-copy`). The
bindings have no model reader, so it is parsed here from Kaldi's documented layout.

A DiagGmm is built from its exact float32 arrays (weights, inv_vars, means_invvars) through the
pickle state, never through `set_invvars_and_means` (which re-multiplies means by inverse
variances and moves the last bit): a model written, read back and rebuilt is then bit-identical
to the one in memory, so a resumed training run continues exactly where the killed one stopped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import asr_kd.kaldi  # noqa: F401  (import order of the k2-fsa packages)
import kaldi_hmm_gmm as khg
import numpy as np

from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path
from asr_kd.kaldi.transitions import TransitionTable, with_log_probs
from asr_kd.kaldi.tree_io import mono_tree

AmDiagGmm = khg.AmDiagGmm


@dataclass
class DiagGmms:
    """Every pdf's diagonal GMM in Kaldi's exponential form, stacked: pdf p owns rows offsets[p]:offsets[p+1].

    log w_g N(x; g) = gconsts[g] + x . means_invvars[g] - 0.5 x^2 . inv_vars[g]. Plain numpy, so
    shards of the E-step receive it pickled and need no Kaldi object.
    """
    offsets: np.ndarray        # (P + 1,) int64
    weights: np.ndarray        # (G,) float32
    inv_vars: np.ndarray       # (G, D) float32
    means_invvars: np.ndarray  # (G, D) float32
    gconsts: np.ndarray        # (G,) float32

    @property
    def num_pdfs(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return self.inv_vars.shape[1]


def gmm_from_arrays(weights: np.ndarray, inv_vars: np.ndarray, means_invvars: np.ndarray) -> khg.DiagGmm:
    """A DiagGmm holding exactly these float32 arrays (its pickle state), gconsts computed by Kaldi."""
    gmm = khg.DiagGmm.__new__(khg.DiagGmm)
    gmm.__setstate__((np.ascontiguousarray(weights, np.float32).reshape(-1),
                      np.ascontiguousarray(inv_vars, np.float32), np.ascontiguousarray(means_invvars, np.float32)))
    gmm.compute_gconsts()
    return gmm


def make_gmm(weights: np.ndarray, means: np.ndarray, variances: np.ndarray) -> khg.DiagGmm:
    """A DiagGmm from natural parameters (nmix,), (nmix, dim), (nmix, dim), converted in float64."""
    weights = np.asarray(weights, np.float64).reshape(-1)
    means = np.asarray(means, np.float64).reshape(len(weights), -1)
    inv_vars = 1.0 / np.asarray(variances, np.float64).reshape(means.shape)
    return gmm_from_arrays(weights, inv_vars, means * inv_vars)


def make_am(gmms: Sequence[khg.DiagGmm]) -> khg.AmDiagGmm:
    am = khg.AmDiagGmm()
    for gmm in gmms:
        am.add_pdf(gmm)
    return am


def stacked(am: khg.AmDiagGmm) -> DiagGmms:
    """The model's GMMs as one `DiagGmms` (float32 copies of Kaldi's arrays)."""
    pdfs = [am.get_pdf(p) for p in range(am.num_pdfs)]
    sizes = [g.num_gauss for g in pdfs]
    return DiagGmms(offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                    weights=np.concatenate([np.asarray(g.weights, np.float32) for g in pdfs]),
                    inv_vars=np.concatenate([np.asarray(g.inv_vars, np.float32) for g in pdfs]),
                    means_invvars=np.concatenate([np.asarray(g.means_invvars, np.float32) for g in pdfs]),
                    gconsts=np.concatenate([np.asarray(g.gconsts, np.float32) for g in pdfs]))


def am_from_stacked(gmms: DiagGmms) -> khg.AmDiagGmm:
    """An AmDiagGmm from stacked arrays (the inverse of `stacked`; gconsts recomputed by Kaldi)."""
    o = gmms.offsets
    return make_am([gmm_from_arrays(gmms.weights[o[p]:o[p + 1]], gmms.inv_vars[o[p]:o[p + 1]],
                                    gmms.means_invvars[o[p]:o[p + 1]]) for p in range(gmms.num_pdfs)])


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
    return " [ " + " ".join(map(repr, np.asarray(v, np.float64).reshape(-1).tolist())) + " ]\n"


def _mat(m) -> str:
    rows = ["  " + " ".join(map(repr, row)) for row in np.asarray(m, np.float64).tolist()]
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
        gmms.append(gmm_from_arrays(weights, inv_vars, means_invvars))
    return make_am(gmms)

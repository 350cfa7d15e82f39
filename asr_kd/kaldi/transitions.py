"""The transition model: per-transition-id lookup tables, ML re-estimation, log-probs as data.

The bindings do not expose the (phone, hmm_state, pdf) tuples, so `TransitionTable` recovers the
HMM state of each transition state from the tree's pdf -> (phone, pdf class) map and the topology.
"""
from __future__ import annotations

import numpy as np

import asr_kd.kaldi  # noqa: F401  (import order of the k2-fsa packages)
import kaldi_hmm_gmm as khg

TransitionModel = khg.TransitionModel


class TransitionTable:
    """Per-transition-id arrays (index 0 unused) of a TransitionModel, for vectorised lookups."""

    def __init__(self, tm: khg.TransitionModel, tree: khg.ContextDependency):
        num_tids = tm.num_transition_ids
        self.num_tids = num_tids
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


def with_log_probs(tm: khg.TransitionModel, log_probs: np.ndarray) -> khg.TransitionModel:
    """A copy of `tm` with these transition log-probs (and Kaldi's derived non-self-loop ones).

    Goes through the pickle state into a fresh object: `__setstate__` on a constructed one is ignored.
    A model read from its text file and the model that wrote it both pass through here, so a
    resumed run continues with bit-identical transition probabilities.
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


def update_transitions(tm: khg.TransitionModel, counts: np.ndarray) -> tuple[khg.TransitionModel, float, float]:
    """Kaldi's TransitionModel::MleUpdate from per-transition-id counts (index 0 unused).

    Returns (updated model, objective improvement, count).
    """
    impr, count = tm.mle_update(np.asarray(counts, np.float64), khg.MleTransitionUpdateConfig())
    return with_log_probs(tm, np.asarray(tm.log_probs, np.float64)), float(impr), float(count)

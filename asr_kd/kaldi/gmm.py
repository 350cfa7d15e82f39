"""The GMM-HMM adapter over kaldi-hmm-gmm, as one import for the stages that use it.

One module per job: `tree_io` (topology, tree files), `model_io` (final.mdl text I/O, building
GMMs from arrays), `transitions` (transition-id tables, transition re-estimation), `gmm_align`
(training graphs, forced alignment). The numpy E-step, M-step and Gaussian splitting live in
`asr_kd.align.gmm_stats` and `asr_kd.align.gmm_update` (no Kaldi call there). This module only
re-exports, so `from asr_kd.kaldi import gmm; gmm.read_model(...)` keeps working everywhere.
"""
from asr_kd.kaldi.gmm_align import align_compiled, equal_align, graph_compiler, read_graphs, write_graphs
from asr_kd.kaldi.model_io import (AmDiagGmm, DiagGmms, am_from_stacked, gmm_from_arrays, init_mono, make_am,
                                   make_gmm, read_model, stacked, write_model)
from asr_kd.kaldi.transitions import TransitionModel, TransitionTable, update_transitions, with_log_probs
from asr_kd.kaldi.tree_io import (ContextDependency, HmmTopology, mono_tree, read_topology, read_tree,
                                  tree_from_bytes, tree_to_bytes, write_tree)

__all__ = ["AmDiagGmm", "ContextDependency", "DiagGmms", "HmmTopology", "TransitionModel", "TransitionTable",
           "align_compiled", "am_from_stacked", "equal_align", "gmm_from_arrays", "graph_compiler", "init_mono",
           "make_am", "make_gmm", "mono_tree", "read_graphs", "read_model", "read_topology", "read_tree",
           "stacked", "tree_from_bytes", "tree_to_bytes", "update_transitions", "with_log_probs",
           "write_graphs", "write_model", "write_tree"]

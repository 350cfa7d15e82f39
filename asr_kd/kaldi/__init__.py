"""The one place that imports the k2-fsa Kaldi packages (kaldifst, kaldi-decoder, kaldilm, kaldi-hmm-gmm).

Versions are pinned in pyproject.toml (DESIGN.md §3): kaldi-hmm-gmm 1.1.4 is built against OpenFst 1.7
types, so only kaldifst 1.7.17 / kaldi-decoder 0.2.11 / kaldilm 1.15.4 interoperate with it.
Importing `kaldilm` before `kaldi_decoder` has been seen to hang, so `kaldi_decoder` is imported
here, first, before any submodule (fst.py for graphs; tree_io, model_io, transitions, gmm_align for
GMM-HMM models, re-exported together by gmm.py) is loaded.
"""
import kaldi_decoder  # noqa: F401  (must precede kaldilm; see docstring)

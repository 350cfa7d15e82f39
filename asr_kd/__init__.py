"""asr_kd: knowledge distillation of hybrid DNN-HMM acoustic models on public corpora.

Pipeline (data flows downward only): data -> lang -> align -> nnet -> distill -> decode -> report.
"""
from asr_kd.errors import AsrKdError

__version__ = "0.1.0"
__all__ = ["AsrKdError", "__version__"]

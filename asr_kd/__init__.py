"""asr_kd: knowledge distillation of hybrid DNN-HMM acoustic models on public corpora.

Pipeline (data flows downward only): data -> lang -> align -> nnet -> distill -> decode -> report.
"""
from asr_kd.errors import AsrKdError

__version__ = "0.1.0"
__all__ = ["AsrKdError", "__version__", "load_model"]


def __getattr__(name: str):
    """`from asr_kd import load_model` (a model package, see asr_kd.deploy.transcribe), imported on
    first use so `import asr_kd` needs none of the audio or decoding packages."""
    if name == "load_model":
        from asr_kd.deploy.transcribe import load_model

        return load_model
    raise AttributeError(f"module 'asr_kd' has no attribute {name!r}")

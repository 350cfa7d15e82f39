"""A model package: everything `transcribe` needs, in one directory that can be copied anywhere.

    make_package("exp/student_T5", "exp/tri1/graph_bg", "pkg", feats="data/fbank/train",
                 ali="exp/tri1_ali", lang="data/lang_test_bg")
    pkg = open_package("pkg")          # refuses a missing or altered file, naming it

Layout (paths relative to the package, so it works from any working directory):
  model.pt              the network (final.pt: state dict + ModelSpec)
  priors.npy            state priors of the training alignment (log-likelihood = log posterior - log prior)
  am.ts                 TorchScript acoustic model: context windows -> log-likelihoods (prior subtracted)
  am.onnx               the same in ONNX (when the `onnx` extra is installed)
  hmm/final.mdl, hmm/tree        transition model and tree (the decoder maps pdfs to transition ids)
  graph/HCLG.fst, graph/words.txt, graph/phones.txt, graph/meta.json
  lang/align_lexicon.txt, lang/silence.int   word -> phones, for word times in the CTM
  meta.json             format, provenance (sources, git commit, versions), feature and CMVN config,
                        decode settings chosen on dev, and the sha256 of every file above

Normalisation: the package records the CMVN the network was trained with (`cmvn_trained`) and the
one transcribe applies (`cmvn_inference`): the same for per-utterance or sliding-window CMN; a
model trained with per-speaker CMVN gets per-utterance CMN at inference (a lone file has no
speaker to pool over), which meta.json says and `transcribe` reports once.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_kd import __version__
from asr_kd.config import from_dict, to_dict
from asr_kd.data.features import CmvnConfig, FeatureConfig, load_features
from asr_kd.errors import AsrKdError
from asr_kd.expdir import environment
from asr_kd.io import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

FORMAT = "asr_kd.package/1"
DEFAULT_DECODE = {"acoustic_scale": 0.1, "word_penalty": 0.0, "beam": 13.0, "lattice_beam": 6.0, "max_active": 7000}


@dataclass
class Package:
    """An opened, verified package: `path`, `meta`, and typed views of what it records."""

    path: Path
    meta: dict

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def feature_config(self) -> FeatureConfig:
        return from_dict(FeatureConfig, self.meta["features"], f"{self.path}/meta.json features")

    @property
    def cmvn(self) -> CmvnConfig:
        """The CMVN transcribe applies (never per speaker)."""
        return from_dict(CmvnConfig, self.meta["cmvn_inference"], f"{self.path}/meta.json cmvn_inference")

    @property
    def decode(self) -> dict:
        return self.meta["decode"]

    @property
    def has_onnx(self) -> bool:
        return "am.onnx" in self.meta["files"]


def make_package(model_dir: str | os.PathLike | list, graph_dir: str | os.PathLike, out: str | os.PathLike, *,
                 feats: str | os.PathLike, ali: str | os.PathLike, lang: str | os.PathLike,
                 hmm_dir: str | os.PathLike | None = None, tuning: str | os.PathLike | None = None,
                 onnx: bool | None = None) -> Package:
    """Write the package for the network in `model_dir` (final.pt) decoded with `graph_dir`;
    given a list of model dirs, the one with the best dev frame accuracy (`choose_on_dev`).

    feats: the network's training feature store (its feature and CMVN config); ali: the training
    alignment (priors.npy); lang: the lang dir (phones/align_lexicon.txt, phones/silence.int);
    hmm_dir: tree + final.mdl (default: the graph's parent, Kaldi's exp/<gmm>/graph_<lm>);
    tuning: tuning.json of a dev-tuned decode (default MODEL_DIR/decode_test/tuning.json, else
    DEFAULT_DECODE); onnx: also export am.onnx (default: when onnx is importable).
    """
    from asr_kd.deploy.export import export_onnx, export_torchscript, onnx_available

    model_dir, candidates = choose_on_dev(model_dir if isinstance(model_dir, list) else [model_dir])
    graph_dir, lang = Path(graph_dir), Path(lang)
    hmm_dir = Path(hmm_dir) if hmm_dir else graph_dir.parent
    store = load_features(feats)
    copies = {"model.pt": model_dir / "final.pt", "priors.npy": Path(ali) / "priors.npy",
              "hmm/final.mdl": hmm_dir / "final.mdl", "hmm/tree": hmm_dir / "tree",
              "lang/align_lexicon.txt": lang / "phones/align_lexicon.txt", "lang/silence.int": lang / "phones/silence.int",
              **{f"graph/{n}": graph_dir / n for n in ("HCLG.fst", "words.txt", "phones.txt", "meta.json")}}
    for src in copies.values():
        if not src.is_file():
            raise AsrKdError(f"{src}: missing; a package needs it (see `asr-kd package --help`)")
    decode = decode_settings(model_dir, tuning)
    trained = from_dict(CmvnConfig, {k: v for k, v in store.meta["cmvn"].items() if k not in ("applied", "stats_file")},
                        f"{store.path}/meta.json cmvn")
    inference = CmvnConfig(**{**to_dict(trained), "per": "utterance"}) if trained.per == "speaker" else trained
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for name, src in copies.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / name)
        export_torchscript(tmp / "model.pt", tmp / "priors.npy", tmp / "am.ts")
        if onnx or (onnx is None and onnx_available()):
            export_onnx(tmp / "model.pt", tmp / "priors.npy", tmp / "am.onnx")
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json(tmp / "meta.json", {
            "format": FORMAT, "asr_kd_version": __version__, "environment": environment(),
            "chosen_on_dev": {"dev_frame_acc": candidates, "chosen": str(model_dir)},
            "sources": {"model_dir": str(model_dir.resolve()), "graph_dir": str(graph_dir.resolve()),
                        "hmm_dir": str(hmm_dir.resolve()), "feats": str(store.path.resolve()),
                        "ali": str(Path(ali).resolve()), "lang": str(lang.resolve())},
            "features": store.meta["config"], "feature_config_hash": store.meta["config_hash"],
            "storage_dtype": store.meta.get("storage_dtype", "float32"),
            "cmvn_trained": to_dict(trained), "cmvn_inference": to_dict(inference),
            "decode": decode, "files": files})
    log.info("%s: package of %s (%d files; CMVN trained %s, applied %s at inference)", out, model_dir, len(files),
             trained.per, inference.per)
    return open_package(out)


def choose_on_dev(model_dirs: list[str | os.PathLike]) -> tuple[Path, dict]:
    """The model dir with the best dev frame accuracy (its eval_dev.json, written by eval-frames),
    and {dir: dev frame accuracy} of every candidate (what the choice was made from)."""
    scores = {}
    for d in map(Path, model_dirs):
        file = d / "eval_dev.json"
        if len(model_dirs) > 1 and not file.is_file():
            raise AsrKdError(f"{file}: missing; choosing among several models needs each one's dev frame accuracy "
                             "(run eval-frames on dev)")
        scores[d] = read_json(file)["frame_acc"] if file.is_file() else None
    best = max(scores, key=lambda d: scores[d] if scores[d] is not None else -1.0)
    return best, {str(d): v for d, v in scores.items()}


def decode_settings(model_dir: Path, tuning: str | os.PathLike | None) -> dict:
    """The decode settings chosen on dev (tuning.json + the beams of the decode that used them)."""
    tuning = Path(tuning) if tuning else model_dir / "decode_test/tuning.json"
    if not tuning.is_file():
        log.warning("%s: no dev tuning found; the package decodes with %s", tuning, DEFAULT_DECODE)
        return {**DEFAULT_DECODE, "tuned_on": None}
    chosen = read_json(tuning)
    wer_json = tuning.parent / "wer.json"
    beams = read_json(wer_json) if wer_json.is_file() else {}
    return {"acoustic_scale": chosen["chosen_acoustic_scale"], "word_penalty": chosen["chosen_word_penalty"],
            **{k: beams.get(k, DEFAULT_DECODE[k]) for k in ("beam", "lattice_beam", "max_active")},
            "tuned_on": chosen.get("tuned_on"), "tuning_file": str(tuning.resolve())}


def open_package(path: str | os.PathLike) -> Package:
    """The package at `path`, after checking every file against the sha256 in its meta.json."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise AsrKdError(f"{path}: not a model package (no meta.json; make one with `asr-kd package`)")
    meta = read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise AsrKdError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    for name, digest in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise AsrKdError(f"{file}: missing from the package; re-make it with `asr-kd package`")
        if sha256_file(file) != digest:
            raise AsrKdError(f"{file}: changed after packaging (sha256 differs from meta.json); "
                             "the package refuses altered files: re-make it with `asr-kd package`")
    return Package(path, meta)


def read_lexicon(pkg: Package) -> tuple[dict[str, list[tuple[str, ...]]], set[str]]:
    """(word -> pronunciations as phone-name tuples, silence phone names) for word times."""
    from asr_kd.lang.prepare_lang import read_align_lexicon, read_symbol_table

    prons = read_align_lexicon(pkg.file("lang/align_lexicon.txt"))
    id2phone = {i: p for p, i in read_symbol_table(pkg.file("graph/phones.txt")).items()}
    silence = {id2phone[int(i)] for i in pkg.file("lang/silence.int").read_text().split()}
    return prons, silence


def load_priors(pkg: Package) -> np.ndarray:
    return np.load(pkg.file("priors.npy"))

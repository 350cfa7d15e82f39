"""Feature views: a stored feature set seen through splicing, a linear transform and per-speaker fMLLR.

A view is a small directory (`view.json`, `matrix.npy`, optionally `fmllr.npz`) that names a
feature store; `open_feats(path)` opens either kind, and a view answers what a stage reads from a
`RaggedStore` (`keys`, `in`, `[utt]`, `num_rows`, `meta`, `path`). The transform is applied when a
shard worker reads an utterance, so GMM passes that change the transform (MLLT, fMLLR: Kaldi's
`splice-feats | transform-feats | transform-feats --utt2spk` pipes) write a few kB per pass,
not a new feature store.

    x_t      = source[utt][t, :columns]                              (e.g. the 13 static MFCCs)
    s_t      = [x_{t-L}; ...; x_{t+R}]                               (edges repeated, as splice-feats)
    y_t      = M s_t  (M: (d, D) or affine (d, D+1))                 (LDA+MLLT, Kaldi final.mat)
    z_t      = A_s y_t + b_s  ([A_s b_s] of the utterance's speaker)  (fMLLR, Kaldi trans.*)

Opening a view limits BLAS to one thread for the rest of the process (GMM shard workers, the
CLI that opens it): the products are small, and on the shared 2-core machine BLAS's spinning
worker threads made one pass over AN4 train through a view cost 95 s of wall time instead of
3 s (measured, load ~30; as `asr_kd.align.gmm_stats` found for the E-step). A context per
utterance costs 3.7 ms, so the limit is set once.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from asr_kd.data.store import RaggedStore, write_store
from asr_kd.errors import AsrKdError
from asr_kd.io import make_temp_dir, read_json, replace_dir, write_json

VIEW_FILE = "view.json"
TRANSFORM_FILES = ("final.mat.npy", "transform.json")   # a model's transform and its splicing (model dir, ali store)


def splice(x: np.ndarray, left: int, right: int) -> np.ndarray:
    """Kaldi's splice-feats: frame t becomes [x_{t-left} .. x_{t+right}], edge frames repeated."""
    x = np.asarray(x)
    if len(x) == 0:
        return np.zeros((0, x.shape[1] * (left + 1 + right)), x.dtype)
    index = np.clip(np.arange(len(x))[:, None] + np.arange(-left, right + 1)[None, :], 0, len(x) - 1)
    return x[index].reshape(len(x), -1)


def apply_affine(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Kaldi's transform-feats: `matrix` (d, D) is linear, (d, D+1) affine (last column the offset)."""
    x = np.asarray(x, np.float64)
    if matrix.shape[1] == x.shape[1]:
        return x @ matrix.T
    if matrix.shape[1] == x.shape[1] + 1:
        return x @ matrix[:, :-1].T + matrix[:, -1]
    raise AsrKdError(f"transform of shape {matrix.shape} does not fit features of dim {x.shape[1]}")


_BLAS_LIMIT = []


def _single_thread_blas() -> None:
    if not _BLAS_LIMIT:
        _BLAS_LIMIT.append(threadpool_limits(limits=1, user_api="blas"))


class FeatureView:
    """Read side of a view directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        _single_thread_blas()
        self.path = Path(path)
        spec = read_json(self.path / VIEW_FILE)
        self.spec = spec
        self.source = RaggedStore(spec["source"])
        self.columns = int(spec["columns"])
        self.left, self.right = (int(n) for n in spec["splice"])
        self.matrix = np.load(self.path / "matrix.npy") if spec.get("matrix") else None
        self.speaker_of: dict[str, int] = {}
        self.fmllr = None
        if spec.get("fmllr"):
            with np.load(self.path / "fmllr.npz") as z:
                self.fmllr = z["transforms"]
                self.speaker_of = dict(zip((str(u) for u in z["utts"]), z["utt_speaker"].tolist()))
        self.keys = self.source.keys
        dim = self._dim()
        self.meta = {**self.source.meta, "dim": dim, "row_shape": [dim], "view": spec,
                     "config_hash": spec["hash"]}

    def _dim(self) -> int:
        if self.matrix is not None:
            return int(self.matrix.shape[0])
        return self.columns * (self.left + 1 + self.right)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: str) -> bool:
        return key in self.source

    def __iter__(self):
        return iter(self.keys)

    def num_rows(self, key: str) -> int:
        return self.source.num_rows(key)

    def lengths(self) -> np.ndarray:
        return self.source.lengths()

    def __getitem__(self, key: str) -> np.ndarray:
        x = splice(np.asarray(self.source[key][:, :self.columns], np.float64), self.left, self.right)
        if self.matrix is not None:
            x = apply_affine(x, self.matrix)
        if self.fmllr is not None:
            if key not in self.speaker_of:
                raise AsrKdError(f"{self.path}: utterance {key!r} has no fMLLR transform (its speaker was not "
                                 f"adapted); re-estimate the transforms for this set")
            x = apply_affine(x, self.fmllr[self.speaker_of[key]])
        return x.astype(np.float32)

    def items(self):
        return ((k, self[k]) for k in self.keys)


def open_feats(path: str | os.PathLike) -> RaggedStore | FeatureView:
    """A feature store or a view of one, whichever `path` holds."""
    return FeatureView(path) if (Path(path) / VIEW_FILE).is_file() else RaggedStore(path)


def write_view(path: str | os.PathLike, source: str | os.PathLike, *, columns: int, left: int, right: int,
               matrix: np.ndarray | None = None, fmllr: dict | None = None) -> FeatureView:
    """Write (or atomically replace) a view dir. `fmllr`: {"transforms": (S, d, d+1), "utts": [...],
    "utt_speaker": (U,) index into transforms, "speakers": [...]} as `fmllr_table` makes it."""
    source = Path(source).resolve()
    store = RaggedStore(source)
    if columns > store.meta["row_shape"][0]:
        raise AsrKdError(f"{source}: features have {store.meta['row_shape'][0]} columns, the view asks for {columns}")
    tmp = make_temp_dir(Path(path))
    digest = hashlib.sha256(f"{store.meta.get('config_hash')}|{columns}|{left}|{right}".encode())
    if matrix is not None:
        np.save(tmp / "matrix.npy", np.asarray(matrix, np.float64))
        digest.update(np.ascontiguousarray(matrix, np.float64).tobytes())
    if fmllr is not None:
        np.savez(tmp / "fmllr.npz", transforms=np.asarray(fmllr["transforms"], np.float64),
                 utts=np.array(fmllr["utts"], dtype=str), utt_speaker=np.asarray(fmllr["utt_speaker"], np.int64),
                 speakers=np.array(fmllr["speakers"], dtype=str))
        digest.update(np.ascontiguousarray(fmllr["transforms"], np.float64).tobytes())
    write_json(tmp / VIEW_FILE, {"kind": "feature_view", "source": str(source), "columns": int(columns),
                                 "splice": [int(left), int(right)], "matrix": matrix is not None,
                                 "fmllr": fmllr is not None, "hash": digest.hexdigest()[:16]})
    replace_dir(tmp, Path(path))
    return FeatureView(path)


def fmllr_table(transforms: dict[str, np.ndarray], utt2spk: dict[str, str]) -> dict:
    """{speaker: [A b]} + utt2spk -> the arrays `write_view` stores (utterances of speakers without a transform left out)."""
    speakers = sorted(transforms)
    index = {s: i for i, s in enumerate(speakers)}
    utts = sorted(u for u, s in utt2spk.items() if s in index)
    stack = np.stack([transforms[s] for s in speakers]) if speakers else np.zeros((0, 1, 2))
    return {"transforms": stack, "utts": utts, "utt_speaker": [index[utt2spk[u]] for u in utts], "speakers": speakers}


def model_view(model_dir: str | Path, store: str | Path, out: str | Path, fmllr: dict | None = None) -> FeatureView:
    """The view of `store` that the model in `model_dir` expects (its splicing and final.mat),
    optionally with per-speaker fMLLR (`fmllr_table`)."""
    model_dir = Path(model_dir)
    if not all((model_dir / name).is_file() for name in TRANSFORM_FILES):
        raise AsrKdError(f"{model_dir}: no {' / '.join(TRANSFORM_FILES)}: not an LDA+MLLT or SAT model dir "
                         f"(or its alignment store)")
    spec = read_json(model_dir / "transform.json")
    return write_view(out, store, columns=spec["columns"], left=spec["splice"][0], right=spec["splice"][1],
                      matrix=np.load(model_dir / "final.mat.npy"), fmllr=fmllr)


def transform_files(model_dir: str | Path) -> dict[str, Path]:
    """The files that define a model's feature transform (copied into its alignment store), if any."""
    files = {name: Path(model_dir) / name for name in TRANSFORM_FILES}
    return files if all(f.is_file() for f in files.values()) else {}


def materialize(view_path: str | os.PathLike, out: str | os.PathLike) -> RaggedStore:
    """Write a view's features as a feature store (e.g. fMLLR features for a DNN: Kaldi's
    steps/nnet/make_fmllr_feats.sh), with the source store's metadata and the view's identity."""
    view = FeatureView(view_path)
    meta = {k: v for k, v in view.source.meta.items()
            if k not in ("dtype", "row_shape", "num_rows", "num_keys")}
    meta.update(dim=view.meta["dim"], config_hash=view.meta["config_hash"], view=view.spec, kind="features")
    store = write_store(out, view.items(), meta, dtype="float32")
    samples = view.source.path / "num_samples.npy"
    if samples.is_file():
        shutil.copyfile(samples, store.path / "num_samples.npy")
    return store

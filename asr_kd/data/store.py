"""RaggedStore: per-utterance arrays of one shape family, stored as ONE contiguous array.

Features, alignments and cached teacher posteriors all have this shape: utterance u owns rows
offsets[u]:offsets[u+1] of a (total_rows, *row_shape) array. Keeping the rows contiguous lets the
trainer move a whole set to the device as one tensor and index frames by arithmetic.

On disk (a directory, written atomically)::

    data.bin      raw little-endian rows (memory-mapped on read)
    offsets.npy   int64, len(keys) + 1
    keys.txt      one utterance id per line, in row order
    meta.json     {"dtype", "row_shape", "num_rows", "num_keys", ...producer metadata}

Why not Kaldi ark/scp: random frame access and one-shot device upload need contiguity; ark
import/export lives in kaldi_io.py for interop.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from asr_kd.errors import AsrKdError
from asr_kd.io import make_temp_dir, read_json, replace_dir, write_json


class RaggedStore:
    """Read side: `store[utt]` is that utterance's (rows, *row_shape) array (a memmap view)."""

    def __init__(self, path: str | os.PathLike, mmap: bool = True):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise AsrKdError(f"{self.path}: not a store (no meta.json); was the stage that writes it run?")
        self.meta = read_json(meta_file)
        self.keys, self.offsets = read_index(self.path)
        dtype, shape = meta_layout(self.path, self.meta)
        if len(self.offsets) != len(self.keys) + 1 or int(self.offsets[-1]) != shape[0]:
            raise AsrKdError(f"{self.path}: offsets.npy does not match keys.txt / meta.json (corrupt store; "
                             f"re-run the step that wrote it)")
        check_data_size(self.path / "data.bin", dtype, shape)
        if shape[0] == 0:
            self.data = np.zeros(shape, dtype)
        elif mmap:
            self.data = np.memmap(self.path / "data.bin", dtype=dtype, mode="r", shape=shape)
        else:
            self.data = np.fromfile(self.path / "data.bin", dtype=dtype).reshape(shape)
        self._index = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def index(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise AsrKdError(f"{self.path}: no utterance {key!r} in store") from None

    def __getitem__(self, key: str) -> np.ndarray:
        i = self.index(key)
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def num_rows(self, key: str) -> int:
        i = self.index(key)
        return int(self.offsets[i + 1] - self.offsets[i])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows start:stop as an in-memory array, read with pread rather than through the memmap.

        Pages touched through a memmap count in the process's resident set until unmapped, so
        a pass over a 30 GB store through `.data` shows 30 GB RSS; pread copies into `out` (or a
        new array) and leaves the file in the page cache only, which the kernel reclaims.
        """
        if stop <= start:
            return self._rows_array(start, stop, out)
        with open(self.path / "data.bin", "rb", buffering=0) as f:
            return self._pread_rows(f.fileno(), start, stop, out)

    def _rows_array(self, start: int, stop: int, out: np.ndarray | None) -> np.ndarray:
        shape = (stop - start, *self.meta["row_shape"])
        return np.empty(shape, np.dtype(self.meta["dtype"])) if out is None else out

    def _pread_rows(self, fd: int, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        out = self._rows_array(start, stop, out)
        row_bytes = np.dtype(self.meta["dtype"]).itemsize * int(np.prod(self.meta["row_shape"], dtype=np.int64))
        view, pos = memoryview(out.reshape(-1).view(np.uint8)), start * row_bytes
        while len(view):
            n = os.preadv(fd, [view], pos)
            if n <= 0:
                raise AsrKdError(f"{self.path}/data.bin: short read at byte {pos} (truncated store?)")
            view, pos = view[n:], pos + n
        return out

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """(key, in-memory rows) in store order, read with pread: a pass over the whole store
        (CMVN, export) keeps its resident set flat, which memmap views would not (see read_rows)."""
        if not len(self.keys) or int(self.offsets[-1]) == 0:
            yield from ((k, self[k]) for k in self.keys)
            return
        with open(self.path / "data.bin", "rb", buffering=0) as f:
            for i, k in enumerate(self.keys):
                yield k, self._pread_rows(f.fileno(), int(self.offsets[i]), int(self.offsets[i + 1]))


def read_index(path: Path) -> tuple[list[str], np.ndarray]:
    """keys.txt and offsets.npy of a store; unreadable ones raise AsrKdError naming the file."""
    try:
        keys = (path / "keys.txt").read_text(encoding="utf-8").split()
    except FileNotFoundError:
        raise AsrKdError(f"{path}/keys.txt: file not found (incomplete store; re-run the step that wrote it)") from None
    except UnicodeDecodeError as e:
        raise AsrKdError(f"{path}/keys.txt: not UTF-8 ({e.reason} at byte {e.start}); corrupt store") from None
    return keys, load_array(path / "offsets.npy")


def load_array(path: Path) -> np.ndarray:
    """np.load of a .npy file (offsets, priors), a missing or corrupt one named in one line."""
    try:
        return np.load(path)
    except FileNotFoundError:
        raise AsrKdError(f"{path}: file not found (incomplete output; re-run the step that wrote it)") from None
    except (ValueError, OSError, EOFError) as e:
        raise AsrKdError(f"{path}: unreadable ({e}); corrupt file, re-run the step that wrote it") from None


def meta_layout(path: Path, meta: dict) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, full shape) that meta.json declares; a meta.json without them is not a store's."""
    try:
        return np.dtype(meta["dtype"]), (int(meta["num_rows"]), *map(int, meta["row_shape"]))
    except (KeyError, TypeError, ValueError) as e:
        raise AsrKdError(f"{path}/meta.json: not a store's meta (bad or missing {e}); "
                         "re-run the step that wrote it") from None


def check_data_size(data_file: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """data.bin must hold exactly the rows meta.json declares: a truncated copy or a full disk during
    a copy otherwise surfaces as numpy's 'mmap length is greater than file size'."""
    expected = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    try:
        actual = data_file.stat().st_size
    except FileNotFoundError:
        if expected == 0:
            return
        raise AsrKdError(f"{data_file}: file not found (incomplete store; re-run the step that wrote it)") from None
    if actual != expected:
        raise AsrKdError(f"{data_file}: {actual} bytes, meta.json declares {shape[0]} rows = {expected} bytes "
                         f"({'truncated' if actual < expected else 'longer than declared'}; re-run the step that wrote it)")


def expect_kind(store: RaggedStore, kind: str, role: str) -> RaggedStore:
    """Refuse a store that is positively of another kind than `kind` (e.g. features and alignments
    swapped): a feature store's meta says kind "features" or has dim; an alignment store has
    num_pdfs and one label per row (row_shape []); log-likelihood stores and caches say their kind.
    Stores that say nothing (hand-made ones) pass: their consumers check shapes anyway."""
    meta = store.meta
    is_features = meta.get("kind") == "features" or "dim" in meta
    is_alignment = "num_pdfs" in meta and meta.get("row_shape") == [] and not is_features
    other_kind = meta.get("kind") not in (None, "features")
    found = "a feature store" if is_features else "an alignment store" if is_alignment else \
        f"a {meta.get('kind', 'multi-column')} store"
    wrong = (is_alignment or other_kind) if kind == "features" else (is_features or meta.get("row_shape") != [])
    if wrong:
        raise AsrKdError(f"{store.path}: given as {role} but it is {found} (arguments in the wrong order?)")
    return store


def check_finite(feats: RaggedStore) -> None:
    """Refuse NaN/inf features, naming the first bad utterance: they poison training silently, and the
    GMM aligner fails on them with a C++ error that names nothing."""
    chunk = 1 << 18  # rows per block: ~40 MB of float32 at 40 dims, whatever the set size
    for start in range(0, feats.data.shape[0], chunk):
        block = feats.read_rows(start, min(start + chunk, feats.data.shape[0])).astype(np.float32)
        bad_rows = np.nonzero(~np.isfinite(block).all(axis=1))[0]
        if len(bad_rows):
            row = start + int(bad_rows[0])
            u = int(np.searchsorted(feats.offsets, row, side="right")) - 1
            raise AsrKdError(f"{feats.path}: utterance {feats.keys[u]!r} has NaN/inf features "
                             f"(frame {row - int(feats.offsets[u])})")


class RaggedStoreWriter:
    """Write side: append (key, array) in order, then `close(meta)` publishes the directory atomically.

    Rows stream to disk, so memory stays flat for sets larger than RAM.
    """

    def __init__(self, path: str | os.PathLike, dtype="float32"):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.tmp = make_temp_dir(self.path)
        self._bin = open(self.tmp / "data.bin", "wb")
        self.keys: list[str] = []
        self.offsets = [0]
        self.row_shape: tuple[int, ...] | None = None
        self._seen: set[str] = set()

    def add(self, key: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        if key in self._seen:
            raise AsrKdError(f"{self.path}: duplicate utterance id {key!r}")
        if self.row_shape is None:
            self.row_shape = tuple(array.shape[1:])
        elif tuple(array.shape[1:]) != self.row_shape:
            raise AsrKdError(f"{self.path}: utterance {key!r} has row shape {array.shape[1:]}, expected {self.row_shape}")
        self._bin.write(np.ascontiguousarray(array, dtype=self.dtype.newbyteorder("<")).tobytes())
        self._seen.add(key)
        self.keys.append(key)
        self.offsets.append(self.offsets[-1] + len(array))

    def close(self, meta: dict | None = None) -> RaggedStore:
        self._bin.close()
        write_store_index(self.tmp, self.keys, self.offsets, self.dtype, self.row_shape or (), meta)
        replace_dir(self.tmp, self.path)
        return RaggedStore(self.path)

    def abort(self) -> None:
        """Drop everything written: the destination is left as it was."""
        self._bin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()


def write_store_index(path: Path, keys: list[str], offsets, dtype, row_shape: tuple[int, ...],
                      meta: dict | None = None) -> None:
    """offsets.npy, keys.txt and meta.json of a store whose data.bin is already at `path` (one
    writer streams it, another fills a pre-sized file region by region)."""
    np.save(path / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    (path / "keys.txt").write_text("".join(k + "\n" for k in keys), encoding="utf-8")
    info = dict(meta or {})
    info.update(dtype=np.dtype(dtype).name, row_shape=list(row_shape), num_rows=int(offsets[-1]), num_keys=len(keys))
    write_json(path / "meta.json", info)


def write_store(path, items: Iterable[tuple[str, np.ndarray]], meta: dict | None = None, dtype="float32") -> RaggedStore:
    """Write all `(key, array)` items to a RaggedStore at `path` atomically and open it."""
    with RaggedStoreWriter(path, dtype) as w:
        for key, arr in items:
            w.add(key, arr)
        return w.close(meta)

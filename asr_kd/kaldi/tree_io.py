"""HMM topologies and phonetic-context trees: Kaldi's `topo` text and binary `tree` files.

The bindings expose no tree reader or writer, so a tree goes through ContextDependency's pickle
state, which is its binary serialisation (Kaldi's layout, readable by `tree-info`).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Sequence

import asr_kd.kaldi  # noqa: F401  (import order of the k2-fsa packages)
import kaldi_hmm_gmm as khg

from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path

HmmTopology = khg.HmmTopology
ContextDependency = khg.ContextDependency


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

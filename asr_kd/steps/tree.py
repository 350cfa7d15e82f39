"""Tree identity: pdf ids mean something only together with the decision tree that made them.

A monophone alignment and a tri1 model can have the same pdf count; matching by count alone then
trains or decodes nonsense without an error. Every producer of pdf-indexed data records
`tree_sha256` (sha256 of the Kaldi `tree` file): alignment stores and log-likelihood stores and
teacher caches in `meta.json`, models in `final.pt`'s spec, GMM dirs are their `tree` file, graphs
in their `meta.json`. Consumers call `check_same_tree` with every side they combine.

An artifact made before this field existed has no value: it is accepted with a warning naming it
(pdf counts are still checked), because refusing would make every existing exp dir (and the shared
AN4 reference data) unusable until re-run; the warning says which step to re-run to get the check.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import sha256_file

log = logging.getLogger(__name__)
TREE_KEY = "tree_sha256"


def tree_of_dir(path: str | Path) -> str | None:
    """The tree checksum of a store / cache / graph (meta.json) or GMM dir (its `tree` file); None if unrecorded."""
    path = Path(path)
    if path.is_file() and path.name.endswith(".npy"):
        path = path.parent  # a priors.npy file stands for its alignment store
    meta = path / "meta.json"
    if meta.is_file():
        value = json.loads(meta.read_text(encoding="utf-8")).get(TREE_KEY)
        if value:
            return value
    tree = path / "tree"
    return sha256_file(tree) if tree.is_file() else None


def check_same_tree(sides: list[tuple[str, str | None]]) -> str | None:
    """Refuse when the named sides record different trees; warn for sides that record none.

    Returns the common tree checksum (None when no side records one).
    """
    known = [(name, sha) for name, sha in sides if sha]
    for name, sha in sides:
        if not sha:
            log.warning("%s records no tree checksum (made before tree identity was recorded): its pdf ids are "
                        "matched by count only; re-run the step that made it to get the check", name)
    for name, sha in known[1:]:
        if sha != known[0][1]:
            raise AsrKdError(f"pdf ids from different trees: {known[0][0]} has tree {known[0][1][:16]} but {name} has "
                             f"tree {sha[:16]}; use an alignment, model and graph made from one tree (GMM dir)")
    return known[0][1] if known else None

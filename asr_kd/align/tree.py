"""Phonetic decision-tree clustering (Kaldi's acc-tree-stats / cluster-phones / build-tree) in numpy.

kaldi-hmm-gmm has no tree building, so the tree is grown here and written as Kaldi's binary
EventMap serialisation, which `ContextDependency` loads (asr_kd.kaldi.gmm.tree_from_bytes).
Layout of the tree (context width 3, central position 1)::

    TE on key 1 (central phone) -> TE on key -1 (pdf class) -> binary SE questions on the left
    (key 0) and right (key 2) phone -> CE leaf (pdf id)

Each (phone, pdf class) is a root; leaves are split greedily, globally best likelihood gain first
(single diagonal Gaussian per side, as Kaldi's GaussClusterable), until `num_leaves` or no split
leaves both sides with `min_count` frames. Questions are phone sets: each phone, the silence
phones (with the utterance-boundary context 0), and every cluster of a top-down 2-means split of
the phones' mean vectors (cluster-phones).
"""
from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass, field

import numpy as np

LEFT, CENTER, RIGHT, PDF_CLASS = 0, 1, 2, -1


@dataclass
class TreeStats:
    """Sufficient statistics per context event: rows of (left, center, right, pdf_class)."""
    events: np.ndarray      # (E, 4) int
    count: np.ndarray       # (E,)
    sum: np.ndarray         # (E, D)
    sumsq: np.ndarray       # (E, D)


def accumulate_tree_stats(items, ci_phones=()) -> TreeStats:
    """`items` yields (feats (T, D), phones (T,), pdf_classes (T,), segment starts (T,) bool) per utterance.

    Context-independent phones (silence) get their own context zeroed, as `acc-tree-stats --ci-phones`.
    Statistics are reduced per utterance, so memory holds one utterance's frames plus the events
    (a shard's stats are then merged with `merge_tree_stats`, in shard order).
    """
    parts = []
    for feats, phones, classes, starts in items:
        seg = np.cumsum(starts) - 1                       # segment index per frame
        seg_phone = phones[np.flatnonzero(starts)]
        left = np.concatenate([[0], seg_phone[:-1]])[seg]
        right = np.concatenate([seg_phone[1:], [0]])[seg]
        ci = np.isin(phones, list(ci_phones))
        left, right = np.where(ci, 0, left), np.where(ci, 0, right)
        x = np.asarray(feats, np.float64)
        parts.append(_reduce(np.stack([left, phones, right, classes], 1), np.ones(len(x)), x, x * x))
    return merge_tree_stats(parts)


def merge_tree_stats(parts: list[TreeStats]) -> TreeStats:
    """The sum of several TreeStats (events unioned), added in the given order."""
    parts = [p for p in parts if len(p.events)]
    if not parts:
        return TreeStats(np.zeros((0, 4), np.int64), np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0)))
    return _reduce(np.concatenate([p.events for p in parts]), np.concatenate([p.count for p in parts]),
                   np.concatenate([p.sum for p in parts]), np.concatenate([p.sumsq for p in parts]))


def _reduce(keys: np.ndarray, count: np.ndarray, sums: np.ndarray, sumsq: np.ndarray) -> TreeStats:
    """Rows with equal event keys summed (sorted by key; a stable sort keeps the summation order)."""
    events, inverse = np.unique(np.asarray(keys, np.int64), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(events)))
    return TreeStats(events, np.add.reduceat(count[order], starts), np.add.reduceat(sums[order], starts),
                     np.add.reduceat(sumsq[order], starts))


def gauss_loglike(count, sums, sumsq, var_floor: float = 1e-3):
    """Log-likelihood of the data under its own ML diagonal Gaussian (vectorised over rows)."""
    count = np.maximum(np.asarray(count, np.float64), 1e-10)
    mean = sums / count[..., None]
    var = np.maximum(sumsq / count[..., None] - mean ** 2, var_floor)
    dim = sums.shape[-1]
    return -0.5 * count * (np.log(var).sum(-1) + dim * (1.0 + np.log(2 * np.pi)))


# ---------------------------------------------------------------- questions

def phone_questions(stats: TreeStats, phones: list[int], silence: list[int], extra: list[list[int]] = ()) -> list[frozenset]:
    """Phone-set questions: singletons, silence (+ boundary 0), extra sets, and 2-means clusters."""
    means = {}
    for p in phones:
        rows = stats.events[:, CENTER] == p
        if stats.count[rows].sum() > 0:
            means[p] = stats.sum[rows].sum(0) / stats.count[rows].sum()
    questions = {frozenset([p]) for p in phones}
    questions.add(frozenset([0, *silence]))
    questions.update(frozenset(q) for q in extra if q)
    questions.update(_cluster_sets(sorted(means), means))
    all_phones = frozenset([0, *phones])
    return sorted((q for q in questions if q and q != all_phones), key=lambda q: sorted(q))


def _cluster_sets(members: list[int], means: dict[int, np.ndarray]) -> list[frozenset]:
    """All clusters of a top-down binary 2-means split of `members` (cluster-phones)."""
    if len(members) < 2:
        return []
    x = np.stack([means[p] for p in members])
    far = np.argmax(((x - x.mean(0)) ** 2).sum(1))
    centers = np.stack([x[far], x[np.argmax(((x - x[far]) ** 2).sum(1))]])
    for _ in range(10):
        assign = np.argmin(((x[:, None] - centers[None]) ** 2).sum(-1), 1)
        if assign.min() == assign.max():
            assign[np.argmax(((x - centers[0]) ** 2).sum(1))] = 1 - assign[0]
        centers = np.stack([x[assign == k].mean(0) for k in (0, 1)])
    out = []
    for k in (0, 1):
        part = [p for p, a in zip(members, assign) if a == k]
        out.append(frozenset(part))
        out.extend(_cluster_sets(part, means))
    return out


# ---------------------------------------------------------------- growing the tree

@dataclass(order=True)
class _Split:
    neg_gain: float
    leaf_id: int
    key: int = field(compare=False)
    question: frozenset = field(compare=False)


def build_tree(stats: TreeStats, questions: list[frozenset], *, num_leaves: int, min_count: float = 100.0,
               min_gain: float = 0.0, roots: list[tuple[int, int]] = ()):
    """Grow the tree from one root per (phone, pdf class) in `roots` and in the stats.

    Returns (EventMap as nested tuples, num_pdfs, {leaf: pdf}, {leaf: stats rows}); a root with no
    stats (a state never aligned) stays one leaf with no rows.
    """
    roots = {tuple(r): [] for r in roots}
    for i, (l, c, r, cls) in enumerate(stats.events):
        roots.setdefault((int(c), int(cls)), []).append(i)
    leaves = {n: np.array(rows, dtype=np.int64) for n, rows in enumerate(roots.values())}
    root_of_leaf = {n: key for n, key in enumerate(roots)}
    masks = {(key, q): np.isin(stats.events[:, key], list(q)) for key in (LEFT, RIGHT) for q in questions}
    splits, children, heap = {}, {}, []
    for n, rows in leaves.items():
        _push_best(heap, n, rows, stats, masks, min_count)
    next_id = len(leaves)
    while len(leaves) < num_leaves and heap:
        best = heapq.heappop(heap)
        if -best.neg_gain <= min_gain:
            break
        rows = leaves.pop(best.leaf_id)
        yes = masks[(best.key, best.question)][rows]
        splits[best.leaf_id] = (best.key, best.question, next_id, next_id + 1)
        for child, child_rows in ((next_id, rows[yes]), (next_id + 1, rows[~yes])):
            leaves[child] = child_rows
            _push_best(heap, child, child_rows, stats, masks, min_count)
        next_id += 2
    pdf_of_leaf = {}
    tree = _assemble(roots, root_of_leaf, splits, pdf_of_leaf)
    return tree, len(pdf_of_leaf), pdf_of_leaf, leaves


def _push_best(heap, leaf_id, rows, stats: TreeStats, masks, min_count) -> None:
    if len(rows) < 2:
        return
    count, sums, sumsq = stats.count[rows], stats.sum[rows], stats.sumsq[rows]
    total = gauss_loglike(count.sum(), sums.sum(0), sumsq.sum(0))
    keys = list(masks)
    yes = np.stack([masks[k][rows] for k in keys]).astype(np.float64)   # (Q, R)
    n_yes, s_yes, q_yes = yes @ count, yes @ sums, yes @ sumsq
    n_no, s_no, q_no = count.sum() - n_yes, sums.sum(0) - s_yes, sumsq.sum(0) - q_yes
    gain = gauss_loglike(n_yes, s_yes, q_yes) + gauss_loglike(n_no, s_no, q_no) - total
    gain[(n_yes < min_count) | (n_no < min_count)] = -np.inf
    best = int(np.argmax(gain))
    if np.isfinite(gain[best]):
        key, question = keys[best]
        heapq.heappush(heap, _Split(-float(gain[best]), leaf_id, key, question))


def _assemble(roots, root_of_leaf, splits, pdf_of_leaf):
    """Nested-tuple EventMap: TE(center) -> TE(pdf class) -> SE ... -> CE(pdf)."""
    def node(leaf_id):
        if leaf_id in splits:
            key, question, yes, no = splits[leaf_id]
            return ("SE", key, sorted(question), node(yes), node(no))
        pdf_of_leaf[leaf_id] = len(pdf_of_leaf)
        return ("CE", pdf_of_leaf[leaf_id])

    root_id = {key: n for n, key in root_of_leaf.items()}
    by_phone: dict[int, dict[int, int]] = {}
    for (phone, cls) in sorted(roots):
        by_phone.setdefault(phone, {})[cls] = root_id[(phone, cls)]
    phone_table = [None] * (max(by_phone) + 1)
    for phone, classes in by_phone.items():
        class_table = [None] * (max(classes) + 1)
        for cls, leaf in sorted(classes.items()):
            class_table[cls] = node(leaf)
        phone_table[phone] = ("TE", PDF_CLASS, class_table)
    return ("TE", CENTER, phone_table)


# ---------------------------------------------------------------- Kaldi binary serialisation

def _token(s: str) -> bytes:
    return s.encode() + b" "


def _int32(v: int) -> bytes:
    return b"\x04" + struct.pack("<i", v)


def event_map_bytes(node) -> bytes:
    """Kaldi's binary EventMap::Write of a nested-tuple map (None = NULL)."""
    if node is None:
        return _token("NULL")
    if node[0] == "CE":
        return _token("CE") + _int32(node[1])
    if node[0] == "SE":
        _, key, yes_set, yes, no = node
        ints = b"\x04" + struct.pack(f"<i{len(yes_set)}i", len(yes_set), *yes_set)
        return _token("SE") + _int32(key) + ints + _token("{") + event_map_bytes(yes) + event_map_bytes(no) + _token("}")
    _, key, table = node
    body = b"".join(event_map_bytes(t) for t in table)
    return _token("TE") + _int32(key) + b"\xfc" + struct.pack("<I", len(table)) + _token("(") + body + _token(")")


def context_dependency_bytes(tree_map, context_width: int = 3, central_position: int = 1) -> bytes:
    """Binary ContextDependency::Write (without the '\\0B' file header)."""
    return (_token("ContextDependency") + _int32(context_width) + _int32(central_position) + _token("ToPdf")
            + event_map_bytes(tree_map) + _token("EndContextDependency"))

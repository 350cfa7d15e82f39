"""TIMIT phone sets as data: the 61 transcription phones folded to 48 for training and 39 for scoring.

The folding is Lee & Hon (1989), as in Kaldi's egs/timit/s5 `phones.60-48-39.map`: closures and
pauses become `sil` for scoring, `q` (glottal stop) is deleted. Columns: 61-set, 48-set, 39-set.
"""
from __future__ import annotations

from typing import Iterable

PHONE_MAP_TABLE = """
aa aa aa
ae ae ae
ah ah ah
ao ao aa
aw aw aw
ax ax ah
ax-h ax ah
axr er er
ay ay ay
b b b
bcl vcl sil
ch ch ch
d d d
dcl vcl sil
dh dh dh
dx dx dx
eh eh eh
el el l
em m m
en en n
eng ng ng
epi epi sil
er er er
ey ey ey
f f f
g g g
gcl vcl sil
h# sil sil
hh hh hh
hv hh hh
ih ih ih
ix ix ih
iy iy iy
jh jh jh
k k k
kcl cl sil
l l l
m m m
n n n
ng ng ng
nx n n
ow ow ow
oy oy oy
p p p
pau sil sil
pcl cl sil
q
r r r
s s s
sh sh sh
t t t
tcl cl sil
th th th
uh uh uh
uw uw uw
ux uw uw
v v v
w w w
y y y
z z z
zh zh sh
"""


def load_maps() -> tuple[dict[str, str | None], dict[str, str]]:
    """(61 -> 48 with None = delete, 48 -> 39)."""
    to48: dict[str, str | None] = {}
    to39: dict[str, str] = {}
    for row in PHONE_MAP_TABLE.split("\n"):
        fields = row.split()
        if fields:
            to48[fields[0]] = fields[1] if len(fields) > 1 else None
            if len(fields) > 1:
                to39[fields[1]] = fields[2]
    return to48, to39


MAP_61_TO_48, MAP_48_TO_39 = load_maps()
PHONES_48 = sorted(set(MAP_48_TO_39))
SILENCE_48 = "sil"


def map_phones(phones: Iterable[str], mapping: dict[str, str | None]) -> list[str]:
    """Map a phone sequence, dropping phones mapped to None; an unknown phone raises KeyError."""
    mapped = (mapping[p] for p in phones)
    return [p for p in mapped if p is not None]


def fold_to_39(phones: Iterable[str]) -> list[str]:
    """A 48-set (or 61-set) sequence in the 39-phone scoring set (what TIMIT PER is reported on)."""
    phones = list(phones)
    if any(p not in MAP_48_TO_39 for p in phones):
        phones = map_phones(phones, MAP_61_TO_48)
    return map_phones(phones, MAP_48_TO_39)

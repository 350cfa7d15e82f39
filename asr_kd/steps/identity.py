"""Fingerprints of steps: what a resumable output was made from, and what changed since.

A fingerprint is a JSON dict {"command", "config", "options", "inputs"}: the resolved config (a
dataclass as a dict, so a YAML file and a `--set` giving the same value agree), the command's other
option values, and for each input path its `path_identity`. Two fingerprints are the same step when
command, config, options and input identities agree (a moved input with the same content is the
same input).

`path_identity` hashes what defines an artifact, not everything in its dir: a model dir is its
`final.pt` (stage 8 writes eval/decode results beside it), a GMM dir its `final.mdl` + `tree`, a
graph its `HCLG.fst`, `words.txt` and `meta.json`, a
store its `meta.json`, `keys.txt`, `offsets.npy`, `priors.npy` and (up to 64 MB) `data.bin` - a
larger `data.bin` is identified by its meta, keys and offsets only, to keep a check cheap on
LibriSpeech-size stores; a data dir its Kaldi tables. Written here because no library does "identity of a Kaldi-style dir";
the hash is hashlib's sha256.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from asr_kd.io import sha256_file

STEP_FILE = "step.json"  # the fingerprint record inside an output dir
MAX_HASHED_BYTES = 64 << 20
STORE_FILES = ("meta.json", "keys.txt", "offsets.npy", "priors.npy", "data.bin")
DATADIR_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "segments")  # not utt2dur etc., which commands add later


def path_identity(path: str | Path) -> str:
    """sha256 (hex) identifying the artifact at `path`; "missing" when there is nothing there."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return "missing"
    return _combine(_defining_files(path))


def _defining_files(path: Path) -> list[Path]:
    if (path / "final.pt").is_file():
        return [path / "final.pt"]
    if (path / "ensemble.json").is_file():
        members = json.loads((path / "ensemble.json").read_text(encoding="utf-8")).get("members", [])
        return [path / "ensemble.json"] + [path / m / "final.pt" for m in members]
    if (path / "HCLG.fst").is_file():
        return [path / "HCLG.fst", path / "words.txt", path / "meta.json"]
    if (path / "meta.json").is_file():  # before final.mdl: an alignment store keeps a copy of its GMM's
        return [path / name for name in STORE_FILES]
    if (path / "final.mdl").is_file():
        return [path / "final.mdl", path / "tree"]
    if (path / "wav.scp").is_file():
        return [path / name for name in DATADIR_FILES]
    # lang dirs, graph dirs, anything else: its visible top-level files
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != STEP_FILE)


def _combine(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        if not f.is_file():
            digest = "missing"
        elif f.stat().st_size > MAX_HASHED_BYTES and f.name == "data.bin":
            digest = f"size {f.stat().st_size}"
        else:
            digest = sha256_file(f)
        h.update(f"{f.name} {digest}\n".encode())
    return h.hexdigest()


def fingerprint(command: str, *, config: dict | None = None, options: dict | None = None,
                inputs: dict[str, str | list[str] | None] | None = None) -> dict:
    """The fingerprint of a step. `inputs` maps a name to a path (or a list of paths, or None)."""
    ids = {}
    for name, value in (inputs or {}).items():
        if value is None:
            continue
        paths = value if isinstance(value, (list, tuple)) else [value]
        ids[name] = [{"path": str(Path(p).resolve()), "identity": path_identity(p)} for p in paths]
    return {"command": command, "config": _plain(config), "options": _plain(options or {}), "inputs": ids}


def _plain(obj):
    """JSON round trip: tuples become lists, so a fingerprint read back from disk compares equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def changes(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints, one phrase each (empty: the same step)."""
    if old.get("command") != new.get("command"):
        return [f"command {old.get('command')!r} -> {new.get('command')!r}"]
    out = []
    for section in ("config", "options"):
        a, b = _flatten(old.get(section) or {}), _flatten(new.get(section) or {})
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<unset>") != b.get(key, "<unset>"):
                out.append(f"{section} {key}: {_short(a.get(key, '<unset>'))} -> {_short(b.get(key, '<unset>'))}")
    a, b = old.get("inputs", {}), new.get("inputs", {})
    for name in sorted(set(a) | set(b)):
        ids_a = [e["identity"] for e in a.get(name, [])]
        ids_b = [e["identity"] for e in b.get(name, [])]
        if not ids_b:
            out.append(f"input {name}: no longer there")
        elif not ids_a:
            out.append(f"input {name}: new")
        elif ids_a != ids_b:
            paths_a = ", ".join(e["path"] for e in a.get(name, [])) or "none"
            paths_b = ", ".join(e["path"] for e in b.get(name, [])) or "none"
            what = "content changed" if paths_a == paths_b else f"was {paths_a}"
            out.append(f"input {name} ({paths_b}): {what} (identity {_ids(ids_a)} -> {_ids(ids_b)})")
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _ids(ids: list[str]) -> str:
    return ",".join(i[:12] for i in ids) or "none"

"""Pack a finished recipe's neural-stage inputs (fbank stores + tri1 alignments) into one small archive.

    python bench/gpu_archive.py an4_gpu.tar.gz                        # from recipes/an4 after `make an4`
    python bench/gpu_archive.py --data D --exp E --max-utts 40 tiny.tar.gz

The GPU machine (bench/gpu_check.sh) has torch, numpy, pyyaml and tqdm, no audio or Kaldi packages
and no network (DESIGN.md §8), so it gets features and alignments, not audio. The archive holds
exactly the recipe's layout for the nnet and distill stages::

    MANIFEST.json                           format, sets (utterances, frames), sha256 of every file
    data/fbank/{train,dev,test}/            feature stores: data.bin (float16), offsets.npy, keys.txt, meta.json
    exp/tri1_ali{,_dev,_test}/              alignment stores: data.bin (int32 pdf ids), ..., priors.npy

Each store is rewritten with `RaggedStoreWriter`, i.e. the same RaggedStore format the trainer
reads, with features as float16 (AN4's fbank stores already are; a float32 store is converted and
its meta says `archive.source_dtype`). The stores' meta (feature `config_hash`, `num_pdfs`) is kept,
so teacher caches and dev sets check against each other as in the recipe. `--max-utts N` keeps the
first N utterances of each set (the CPU `--tiny` check). AN4 whole: about 24 MB of stores, 60 MB
is the limit (`--max-mb`). Diagnostics the neural stages never read (phones/, transitions/,
ctm.txt, GMM models, CMVN stats) stay behind.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from asr_kd.data.store import RaggedStore, write_store
from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path, read_json, sha256_file, write_json

FORMAT = "asr_kd.gpu_archive/1"
SETS = ("train", "dev", "test")
WRITER_KEYS = ("dtype", "row_shape", "num_rows", "num_keys")  # RaggedStoreWriter sets these itself


def feats_path(data_dir: Path, name: str) -> Path:
    return data_dir / "fbank" / name


def ali_path(exp_dir: Path, name: str) -> Path:
    return exp_dir / ("tri1_ali" if name == "train" else f"tri1_ali_{name}")


def copy_store(src: Path, dst: Path, keys: list[str], dtype: str) -> RaggedStore:
    """`src`'s utterances `keys` (in order) as a RaggedStore of `dtype` at `dst`, its meta kept."""
    store = RaggedStore(src)
    meta = {k: v for k, v in store.meta.items() if k not in WRITER_KEYS}
    meta["archive"] = {"source": str(src), "source_dtype": store.meta["dtype"], "utterances_kept": len(keys),
                       "utterances_in_source": len(store)}
    if "num_frames" in meta:
        meta["num_frames"] = int(sum(store.num_rows(k) for k in keys))
    if "num_utts" in meta:
        meta["num_utts"] = len(keys)
    out = write_store(dst, ((k, converted(src, k, store[k], dtype)) for k in keys), meta=meta, dtype=dtype)
    if (src / "priors.npy").is_file():
        shutil.copyfile(src / "priors.npy", dst / "priors.npy")
    return out


def converted(src: Path, key: str, rows: np.ndarray, dtype: str) -> np.ndarray:
    """`rows` as `dtype`, refusing values that become infinite (float32 features past float16's 65504)."""
    out = rows.astype(dtype)
    if out.dtype.kind == "f" and not np.isfinite(out).all() and np.isfinite(rows).all():
        raise AsrKdError(f"{src}: utterance {key!r} has values beyond {dtype}'s range; "
                         f"these features cannot be archived as {dtype} (are they CMVN-normalised?)")
    return out


def stage(data: Path, exp: Path, root: Path, max_utts: int | None) -> dict:
    """Write the archive's tree under `root`; return its manifest."""
    sets = {}
    for name in SETS:
        src_feats, src_ali = feats_path(data, name), ali_path(exp, name)
        for path in (src_feats, src_ali):
            if not (path / "meta.json").is_file():
                raise AsrKdError(f"{path}: no store there; run the recipe through stage 4 first "
                                 f"(make an4) or point --data/--exp at its data and exp dirs")
        keys = RaggedStore(src_feats).keys[:max_utts]
        feats = copy_store(src_feats, feats_path(root / "data", name), keys, "float16")
        aligned = RaggedStore(src_ali)
        ali = copy_store(src_ali, ali_path(root / "exp", name), [k for k in keys if k in aligned], "int32")
        sets[name] = {"utterances": len(feats), "frames": int(feats.meta["num_rows"]),
                      "aligned_utterances": len(ali), "num_pdfs": ali.meta.get("num_pdfs")}
    files = {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    return {"format": FORMAT, "sets": sets, "max_utts": max_utts, "source": {"data": str(data), "exp": str(exp)},
            "files": files}


def build_archive(data: str | Path, exp: str | Path, out: str | Path, *, max_utts: int | None = None,
                  max_mb: float = 60.0) -> dict:
    """Build `out` (.tar.gz) from a recipe's data and exp dirs; refuse it past `max_mb`."""
    out = Path(out)
    if max_utts is not None and max_utts < 1:
        raise AsrKdError(f"--max-utts {max_utts}: keep at least one utterance per set")
    with tempfile.TemporaryDirectory(prefix="gpu_archive_") as tmp:
        root = Path(tmp) / "tree"
        manifest = stage(Path(data), Path(exp), root, max_utts)
        write_json(root / "MANIFEST.json", manifest)
        with atomic_path(out) as tmp_out:
            with tarfile.open(tmp_out, "w:gz") as tar:
                for path in sorted(root.rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
            size_mb = Path(tmp_out).stat().st_size / 2**20
            if size_mb > max_mb:
                raise AsrKdError(f"{out}: the archive would be {size_mb:.1f} MB, over the {max_mb:g} MB limit; "
                                 f"keep fewer utterances with --max-utts")
    return {"archive": str(out), "mb": round(size_mb, 2), "sets": manifest["sets"]}


def open_archive(archive: str | Path, dest: str | Path) -> dict:
    """Unpack `archive` into `dest`, check every file against MANIFEST.json; return the manifest
    with `paths`: {set: (feature store, alignment store)}."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise AsrKdError(f"{archive}: no such archive; build one with bench/gpu_archive.py")
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # a truncated .gz ends in EOFError
        raise AsrKdError(f"{archive}: not a readable archive ({e}); rebuild it with bench/gpu_archive.py") from e
    manifest_file = dest / "MANIFEST.json"
    manifest = read_json(manifest_file) if manifest_file.is_file() else {}
    if manifest.get("format") != FORMAT:
        raise AsrKdError(f"{archive}: no {FORMAT} MANIFEST.json; rebuild it with bench/gpu_archive.py")
    for name, digest in manifest["files"].items():
        if not (dest / name).is_file() or sha256_file(dest / name) != digest:
            raise AsrKdError(f"{archive}: {name} is missing or differs from MANIFEST.json (damaged archive)")
    manifest["paths"] = {name: (feats_path(dest / "data", name), ali_path(dest / "exp", name)) for name in SETS}
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="archive to write (.tar.gz)")
    p.add_argument("--data", default="recipes/an4/data", help="recipe data dir (holds fbank/<set>)")
    p.add_argument("--exp", default="recipes/an4/exp", help="recipe exp dir (holds tri1_ali, tri1_ali_dev, ...)")
    p.add_argument("--max-utts", type=int, help="keep the first N utterances of each set")
    p.add_argument("--max-mb", type=float, default=60.0, help="refuse an archive larger than this")
    args = p.parse_args(argv)
    try:
        print(json.dumps(build_archive(args.data, args.exp, args.out, max_utts=args.max_utts, max_mb=args.max_mb)))
    except AsrKdError as e:
        print(f"gpu_archive: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

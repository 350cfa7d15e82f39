"""Feature interop with Kaldi: a RaggedStore <-> ark/scp tables, through kaldi-native-io.

Kaldi tools (or lhotse, ESPnet) read what `export_kaldi` writes (`copy-feats scp:feats.scp ark,t:-`),
and features made by a Kaldi recipe come in with `import_kaldi`. Both directions are atomic.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr_kd.data.datadir import c_order
from asr_kd.data.store import RaggedStore, RaggedStoreWriter
from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path, sha256_json


def export_kaldi(store: RaggedStore | str | os.PathLike, ark_path: str | os.PathLike,
                 scp_path: str | os.PathLike) -> int:
    """Write every utterance of `store` as a float32 matrix to `ark_path` + index `scp_path`; returns the count."""
    import kaldi_native_io as kio

    store = store if isinstance(store, RaggedStore) else RaggedStore(store)
    ark_path, scp_path = Path(ark_path), Path(scp_path)
    with atomic_path(ark_path) as tmp_ark, atomic_path(scp_path) as tmp_scp:
        writer = kio.FloatMatrixWriter(f"ark,scp:{tmp_ark},{tmp_scp}")
        for utt, feats in tqdm(store.items(), total=len(store), desc=f"export {store.path}", unit="utt"):
            writer.write(utt, np.ascontiguousarray(feats, dtype=np.float32))
        writer.close()
        # the scp names the temporary ark; point it at the final one (byte offsets are unchanged)
        scp_text = tmp_scp.read_text(encoding="utf-8").replace(f" {tmp_ark}:", f" {ark_path}:")
        tmp_scp.write_text(scp_text, encoding="utf-8")
    return len(store)


def import_kaldi(table: str | os.PathLike, out_dir: str | os.PathLike, meta: dict | None = None,
                 dtype: str = "float32") -> RaggedStore:
    """Read a Kaldi feature table (`.scp` or `.ark`, sorted by key as Kaldi keeps them) into a RaggedStore.

    `meta` describes the features (frame_shift_ms, sample_rate, cmvn, config...); what is not given is
    recorded as unknown, and `config_hash` is derived from `config` (default: the source path).
    """
    import kaldi_native_io as kio

    table = Path(table)
    if not table.is_file():
        raise AsrKdError(f"{table}: Kaldi table not found")
    kind = "scp" if table.suffix == ".scp" else "ark"
    try:
        reader = kio.SequentialFloatMatrixReader(f"{kind}:{table}")
    except RuntimeError as e:
        raise AsrKdError(f"{table}: cannot read as a Kaldi {kind} of float matrices: {str(e).splitlines()[-1]}") from None
    previous = None
    with RaggedStoreWriter(out_dir, dtype) as writer:
        for utt, feats in tqdm(reader, desc=f"import {table}", unit="utt"):
            if previous is not None and c_order(utt) <= c_order(previous):
                raise AsrKdError(f"{table}: key '{utt}' after '{previous}': not sorted (sort it with LC_ALL=C sort)")
            writer.add(utt, np.asarray(feats))
            previous = utt
        reader.close()
        if not writer.keys:
            raise AsrKdError(f"{table}: no matrices in the table")
        return writer.close(import_meta(table, meta, writer))


def import_meta(table: Path, meta: dict | None, writer: RaggedStoreWriter) -> dict:
    info = {"config": {"source": "kaldi", "table": str(table)}, "sample_rate": None, "frame_shift_ms": 10.0,
            "cmvn": {"applied": None}, "skipped": []}
    info.update(meta or {})
    info.setdefault("config_hash", sha256_json(info["config"]))
    info.update(kind="features", source="kaldi:" + str(table), num_frames=writer.offsets[-1],
                dim=int(writer.row_shape[0]), num_utts=len(writer.keys))
    return info

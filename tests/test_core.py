"""Configs, atomic writes and the ragged store: the contracts every stage relies on."""
from dataclasses import dataclass, field

import numpy as np
import pytest

from asr_kd.config import apply_overrides, load_config, save_config
from asr_kd.data.store import RaggedStore, RaggedStoreWriter, write_store
from asr_kd.errors import AsrKdError
from asr_kd.io import write_text


@dataclass
class Optim:
    lr: float = 0.1
    hidden: list[int] = field(default_factory=lambda: [512, 512])


@dataclass
class Top:
    name: str = "dnn"
    optim: Optim = field(default_factory=Optim)


def test_config_roundtrip_and_overrides(tmp_path):
    cfg = apply_overrides(Top(), ["optim.lr=3", "optim.hidden=[8, 4]", "name=tdnn"])
    assert cfg.optim.lr == 3.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.hidden == [8, 4] and cfg.name == "tdnn"
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Top, tmp_path / "c.yaml") == cfg


def test_config_unknown_key_is_error(tmp_path):
    with pytest.raises(AsrKdError, match="unknown key.*'lrr'"):
        apply_overrides(Top(), ["optim.lrr=1"])
    (tmp_path / "c.yaml").write_text("optim: {momentum: 0.9}\n")
    with pytest.raises(AsrKdError, match="c.yaml.*momentum"):
        load_config(Top, tmp_path / "c.yaml")
    with pytest.raises(AsrKdError, match="expected int"):
        apply_overrides(Top(), ["optim.hidden=[a]"])


def test_store_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    items = [("u2", rng.normal(size=(5, 3))), ("u1", rng.normal(size=(2, 3))), ("u3", np.zeros((0, 3)))]
    store = write_store(tmp_path / "s", items, meta={"what": "test"}, dtype="float16")
    assert store.keys == ["u2", "u1", "u3"] and store.meta["what"] == "test"
    assert store.data.shape == (7, 3) and store.data.dtype == np.float16
    np.testing.assert_allclose(store["u1"], items[1][1].astype(np.float16))
    assert store.num_rows("u3") == 0 and list(store.lengths()) == [5, 2, 0]
    with pytest.raises(AsrKdError, match="'nope'"):
        store["nope"]
    scanned = list(store.items())  # pread copies, not memmap views: a full pass keeps RSS flat
    assert [k for k, _ in scanned] == ["u2", "u1", "u3"]
    assert not any(isinstance(rows, np.memmap) for _, rows in scanned)
    for (_, rows), (_, written) in zip(scanned, items):
        np.testing.assert_array_equal(rows, written.astype(np.float16))
        assert rows.shape == written.shape and rows.dtype == np.float16


def test_store_failure_leaves_old_version(tmp_path):
    write_store(tmp_path / "s", [("a", np.ones((2, 2)))])
    with pytest.raises(AsrKdError, match="duplicate utterance id 'b'"):
        with RaggedStoreWriter(tmp_path / "s") as w:
            w.add("b", np.zeros((1, 2)))
            w.add("b", np.zeros((1, 2)))
    assert RaggedStore(tmp_path / "s").keys == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temp dirs left behind


def test_atomic_text_write_failure_keeps_file(tmp_path, monkeypatch):
    target = tmp_path / "t.txt"
    write_text(target, "old")
    import asr_kd.io as io

    monkeypatch.setattr(io.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_text(target, "new")
    assert target.read_text() == "old"

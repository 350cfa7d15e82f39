"""FrameData: device-side context windows at utterance edges, label/feature checks, shuffling."""
import numpy as np
import pytest
import torch

from asr_kd.data.store import write_store
from asr_kd.errors import AsrKdError
from asr_kd.nnet.frames import FrameData, make_generator, shuffled


def row_id_data(lengths=(4, 1, 6)) -> FrameData:
    """Feature value = global row id, so a window shows exactly which rows it gathered."""
    n = sum(lengths)
    feats = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 2)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]))
    return FrameData(feats, offsets, [f"u{i}" for i in range(len(lengths))])


def test_windows_repeat_edge_frames_and_stay_inside_utterance():
    data = row_id_data()
    win = data.windows(torch.tensor([0, 3, 4, 5, 10]), left=2, right=3).reshape(5, 6, 2)[..., 0]
    assert win[0].tolist() == [0, 0, 0, 1, 2, 3]          # first frame of u0: left edge repeated
    assert win[1].tolist() == [1, 2, 3, 3, 3, 3]          # last frame of u0: never reaches u1
    assert win[2].tolist() == [4] * 6                     # u1 has 1 frame, shorter than the window
    assert win[3].tolist() == [5, 5, 5, 6, 7, 8]          # first frame of u2
    assert win[4].tolist() == [8, 9, 10, 10, 10, 10]      # last frame of the set


def test_batch_carries_labels_and_utterances():
    data = row_id_data()
    data.labels = torch.arange(data.num_frames)
    batch = data.batch(torch.tensor([4, 7]), 1, 1)
    assert batch.x.shape == (2, 6) and batch.y.tolist() == [4, 7] and batch.utt_index.tolist() == [1, 2]


def test_shuffling_is_seeded_per_member():
    frames = torch.arange(1000)
    a1 = shuffled(frames, make_generator(1, torch.device("cpu")))
    a2 = shuffled(frames, make_generator(1, torch.device("cpu")))
    b = shuffled(frames, make_generator(2, torch.device("cpu")))
    assert torch.equal(a1, a2) and not torch.equal(a1, b)
    assert torch.equal(torch.sort(b).values, frames)       # a permutation: every frame once


def _stores(tmp_path, feats, alis, num_pdfs=3):
    write_store(tmp_path / "f", feats)
    write_store(tmp_path / "a", alis, meta={"num_pdfs": num_pdfs}, dtype="int32")
    return tmp_path / "f", tmp_path / "a"


def test_label_length_mismatch_names_utterance(tmp_path):
    f, a = _stores(tmp_path, [("good", np.zeros((3, 2))), ("bad", np.zeros((5, 2)))],
                   [("good", np.zeros(3)), ("bad", np.zeros(4))])
    with pytest.raises(AsrKdError, match="'bad' has 4 labels but 5 feature frames"):
        FrameData.load(f, a)


def test_label_out_of_range_names_utterance(tmp_path):
    f, a = _stores(tmp_path, [("x", np.zeros((2, 2)))], [("x", np.array([0, 7]))])
    with pytest.raises(AsrKdError, match="'x' has pdf ids outside"):
        FrameData.load(f, a)


def test_nan_features_name_utterance(tmp_path):
    bad = np.zeros((4, 2))
    bad[2, 1] = np.nan
    write_store(tmp_path / "f", [("ok", np.zeros((3, 2))), ("broken", bad)])
    with pytest.raises(AsrKdError, match="'broken' has NaN/inf features \\(frame 2\\)"):
        FrameData.load(tmp_path / "f")


def test_unaligned_utterances_and_unlabelled_sets(tmp_path):
    f, a = _stores(tmp_path, [("a", np.zeros((2, 2))), ("b", np.ones((3, 2)))], [("b", np.array([2, 1, 0]))])
    data = FrameData.load(f, a)
    assert data.labels.tolist() == [-1, -1, 2, 1, 0] and data.num_pdfs == 3
    assert data.labelled_frames().tolist() == [2, 3, 4]
    assert (FrameData.load(f).labels == -1).all()

"""Paired bootstrap (Bisani & Ney 2004) on pairs whose answer is known in closed form."""
from math import comb

import numpy as np
import pytest

from asr_kd.decode.scoring import wer, write_wer_dir
from asr_kd.decode.significance import UttErrors, paired_bootstrap, utt_errors, wer_interval
from asr_kd.errors import AsrKdError


def _pair(plus: int, minus: int, words: int = 10):
    """B has one error fewer than A on `plus` utterances and one more on `minus` (equal lengths)."""
    ids = [f"u{i:02d}" for i in range(plus + minus)]
    a = np.array([1] * plus + [0] * minus)
    b = np.array([0] * plus + [1] * minus)
    w = np.full(len(ids), words)
    return UttErrors(ids, a, w), UttErrors(ids, b, w)


def test_probability_of_improvement_is_the_binomial_tail():
    # a resample draws 10 utterances; B is better iff more than 5 come from the 6 it improves:
    # P = sum_{k>=6} C(10,k) 0.6^k 0.4^(10-k) = 0.6331 (k = 5 is a tie, not an improvement)
    a, b = _pair(6, 4)
    exact = sum(comb(10, k) * 0.6 ** k * 0.4 ** (10 - k) for k in range(6, 11))
    r = paired_bootstrap(a, b, resamples=20000)
    assert exact == pytest.approx(0.6331, abs=1e-4)
    assert r.prob_improvement == pytest.approx(exact, abs=0.01)
    assert (r.wer_a, r.wer_b, r.difference) == pytest.approx((6.0, 4.0, 2.0))
    # difference per resample = (2k - 10) / 100 words * 100%: 2.5/97.5 percentiles of k ~ Bin(10, .6) are 3 and 9
    assert r.interval == pytest.approx((-4.0, 8.0))


def test_always_better_and_identical_systems():
    a, b = _pair(5, 0)
    r = paired_bootstrap(a, b, resamples=2000)
    assert r.prob_improvement == 1.0 and r.interval[0] > 0
    same = paired_bootstrap(a, a, resamples=2000)
    assert same.prob_improvement == 0.0 and same.interval == (0.0, 0.0)
    assert wer_interval(_pair(0, 5)[0]) == (0.0, 0.0)


def test_from_decode_dirs_and_mismatch(tmp_path):
    refs = {"u1": "A B C", "u2": "D E", "u3": "F"}
    for name, hyps in (("base", {"u1": "A X C", "u2": "D", "u3": "F G"}), ("stud", {"u1": "A B C", "u2": "D", "u3": "F"})):
        write_wer_dir(tmp_path / name, wer(refs, hyps), refs, hyps)
    a, b = utt_errors(tmp_path / "base"), utt_errors(tmp_path / "stud")
    assert a.errors.tolist() == [1, 1, 1] and b.errors.tolist() == [0, 1, 0] and a.words.tolist() == [3, 2, 1]
    assert paired_bootstrap(a, b).difference == pytest.approx(100 * 2 / 6)
    short = UttErrors(a.utt_ids[:2], a.errors[:2], a.words[:2])
    with pytest.raises(AsrKdError, match="same test utterances"):
        paired_bootstrap(short, b)
    with pytest.raises(AsrKdError, match="no ref.txt"):
        utt_errors(tmp_path)

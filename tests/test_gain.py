"""Gain kept (one function): the four sign cases, the seed-spread rule, ratio of mean gains over seeds."""
import pytest

from asr_kd.distill.gain import gain_kept, gain_kept_over_seeds


def test_gain_kept_four_sign_cases():
    # ensemble better, student better: the paper's Table 1, (60.8 - 58.9) / (61.1 - 58.9)
    assert gain_kept(0.608, 0.589, 0.611) == pytest.approx(19 / 22)
    # ensemble better, student worse than the baseline: a negative share, reported as such
    assert gain_kept(0.57, 0.58, 0.60) == pytest.approx(-0.5)
    # ensemble worse, student better: no gain to keep, not a negative share
    assert gain_kept(0.60, 0.58, 0.57) is None
    # ensemble worse, student worse: two negatives must not read as a 74% "gain kept"
    assert gain_kept(0.5725, 0.580, 0.572) is None
    assert gain_kept(0.5, 0.6, 0.6) is None  # no gain: undefined, not a division by zero


def test_gain_kept_needs_more_than_the_seed_spread():
    assert gain_kept(0.59, 0.58, 0.60, spread=0.03) is None       # a 2-point gain inside a 3-point spread
    assert gain_kept(0.59, 0.58, 0.60, spread=0.01) == pytest.approx(0.5)


def test_over_seeds_is_the_ratio_of_mean_gains():
    # per-seed ratios 0.9 (gain 0.10) and 0.0 (gain 0.01): their mean 45% hides that the mean gain
    # kept is (0.09 + 0) / (0.10 + 0.01) = 81.8%
    g = gain_kept_over_seeds([0.59, 0.50], [0.50, 0.50], [0.60, 0.51])
    assert g.value == pytest.approx(0.09 / 0.11)
    assert g.per_seed == pytest.approx([0.9, 0.0])
    lo, hi = g.interval
    assert lo == pytest.approx(0.0) and hi == pytest.approx(0.9)   # the seed-resampled ratios span 0 .. 0.9
    assert g.describe().startswith("81.8 [0.0, 90.0] (seeds: 90.0, 0.0)")
    worse = gain_kept_over_seeds([0.58], [0.58], [0.575])
    assert worse.value is None and worse.describe() == "n/a: ensemble not better" and worse.interval is None

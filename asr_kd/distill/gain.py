"""The share of the ensemble's gain over the baseline that a distilled student keeps (paper Table 1:
(60.8 - 58.9) / (61.1 - 58.9) = 86%), in one place for the experiments and the report.

The ratio means something only when there is a gain to keep: when the ensemble is not better than
the baseline by more than the seed-to-seed spread of one model, (student - baseline) / (ensemble -
baseline) divides noise by noise (two negatives even give a large positive share), so it is
undefined here (None) and the report says "n/a: ensemble not better" in words. Over seeds the
summary is the ratio of the MEAN gains (a mean of per-seed ratios is dominated by the seed whose
ensemble gain is smallest), with the per-seed values and a bootstrap interval over seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def gain_kept(student: float, baseline: float, ensemble: float, spread: float = 0.0) -> float | None:
    """(student - baseline) / (ensemble - baseline); None unless the ensemble beats the baseline by
    more than `spread` (e.g. the seed standard deviation of one model; 0 = any gain)."""
    if ensemble - baseline <= max(spread, 0.0):
        return None
    return (student - baseline) / (ensemble - baseline)


@dataclass
class GainOverSeeds:
    """Gain kept over seeds: ratio of mean gains, per-seed ratios, a bootstrap interval over seeds."""

    value: float | None  # ratio of the mean gains; None: no ensemble gain beyond the spread
    per_seed: list[float | None] = field(default_factory=list)
    interval: tuple[float, float] | None = None  # 95% percentile bootstrap over seeds (>= 2 seeds)
    ensemble_gain: float = 0.0  # mean ensemble - baseline
    spread: float = 0.0

    def describe(self, pct: bool = True) -> str:
        """For a table cell: '80.0' or 'n/a: ensemble not better'."""
        if self.value is None:
            return "n/a: ensemble not better"
        scale = 100.0 if pct else 1.0
        text = f"{scale * self.value:.1f}"
        if self.interval is not None:
            text += f" [{scale * self.interval[0]:.1f}, {scale * self.interval[1]:.1f}]"
        if len(self.per_seed) > 1:
            text += " (seeds: " + ", ".join("n/a" if g is None else f"{scale * g:.1f}" for g in self.per_seed) + ")"
        return text


def gain_kept_over_seeds(students: list[float], baselines: list[float], ensembles: list[float], spread: float = 0.0,
                         resamples: int = 10000, seed: int = 0) -> GainOverSeeds:
    """students[i], baselines[i], ensembles[i] from seed i (equal lengths)."""
    s, b, e = (np.asarray(v, dtype=np.float64) for v in (students, baselines, ensembles))
    if not (len(s) == len(b) == len(e) >= 1):
        raise ValueError(f"gain kept needs one student, baseline and ensemble per seed, got {len(s)}, {len(b)}, {len(e)}")
    per_seed = [gain_kept(si, bi, ei, spread) for si, bi, ei in zip(s, b, e)]
    value = gain_kept(s.mean(), b.mean(), e.mean(), spread)
    interval = None
    if value is not None and len(s) > 1:
        idx = np.random.default_rng(seed).integers(0, len(s), size=(resamples, len(s)))
        ens_gain = (e[idx] - b[idx]).mean(1)
        ok = ens_gain > 0
        ratios = (s[idx] - b[idx]).mean(1)[ok] / ens_gain[ok]
        if len(ratios):
            interval = (float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5)))
    return GainOverSeeds(value, per_seed, interval, float((e - b).mean()), spread)

"""recipes/yesno/run.sh stages 0-3 on the real corpus: the monophone GMM must decode Kaldi's 29 test
files (232 words) with at most 1 error, as Kaldi's egs/yesno mono does (0.00%), scored over Kaldi's
LM weights 9-11. Before the training graphs stopped carrying 0.mdl's transition probabilities and
the equal alignment was seeded per utterance, it made 8 errors there (0/0/8: a NO inserted at the
start of utterances)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parents[2] / "shared/corpora/yesno"


@pytest.mark.skipif(not (CORPUS / "waves_yesno").is_dir(), reason=f"yesno corpus not found at {CORPUS}")
def test_yesno_monophones_make_at_most_one_error(tmp_path):
    cmd = ["bash", str(REPO / "recipes/yesno/run.sh"), "--python", sys.executable, "--corpus", str(CORPUS),
           "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"), "--stop-stage", "3",
           "--lm-weights", "9:11", "--nj", "1"]
    out = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wer = json.loads((tmp_path / "exp/mono/decode_test/wer.json").read_text())
    assert (wer["words"], wer["utterances"]) == (232, 29)
    assert wer["errors"] <= 1, wer

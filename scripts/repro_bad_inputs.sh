#!/usr/bin/env bash
# Re-runs issue 15's reproductions (items 4-5: named errors, newcomer path) and prints, for each,
# the command and the first line of what it printed (the error line, or the result where the bad
# input is now handled). Inputs: copies of AN4 reference data (default /work/an4ref, read-only) and
# tiny synthetic stores, all under a scratch dir (default: a new mktemp dir, kept for inspection).
#
#   scripts/repro_bad_inputs.sh [AN4REF_DIR] [WORK_DIR]
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
ref=${1:-/work/an4ref}
work=${2:-$(mktemp -d /tmp/repro_bad_inputs.XXXX)}
py=${PYTHON:-$repo/.venv/bin/python}
[ -x "$py" ] || py=python3
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=1
cd "$work"
tiny=(--set max_epochs=1 --set model.hidden_dim=8 --set model.hidden_layers=1 --set batch_size=64 --set device=cpu)

show() {  # show TITLE CMD...: the command, then the first line of its output that says error/warning (else the first)
  local title=$1; shift
  local out rc
  out=$("$@" 2>&1); rc=$?
  echo "## $title"
  echo "\$ ${*//$work\//}"
  local line
  line=$(grep -m1 -iE "error|warning|WARNING|diverged" <<<"$out" || head -n1 <<<"$out")
  echo "${line//$work\//}"
  echo "(exit $rc)"
  echo
}
show_all() {  # show_all TITLE PATTERN CMD...: like show, every output line matching PATTERN
  local title=$1 pattern=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  echo "## $title"
  echo "\$ ${*//$work\//}"
  grep -E "$pattern" <<<"$out" | sed -E "s|$work/||g; s/^[0-9-]+ [0-9:,]+ ([A-Z]+) asr_kd\.[a-z_.]+: /\1: /"
  echo "(exit $rc)"
  echo
}
kd() { "$py" -m asr_kd "$@"; }
pyc() { "$py" -c "$@"; }

# ---------------------------------------------------------------- inputs
kd subset-data-dir --first 20 "$ref/data/train" train20 >/dev/null
cp -r "$ref/data/mfcc/train" mfcc_train
cp -r "$ref/data/local/dict" dict
pyc "from tests.nnet_synth import make_sets; from pathlib import Path
make_sets(Path('.'), num_utts=30, max_len=40, name='tr'); make_sets(Path('.'), num_utts=8, name='dv', seed=1)
make_sets(Path('.'), num_utts=30, num_pdfs=6, max_len=40, name='tr6'); make_sets(Path('.'), num_utts=8, num_pdfs=6, name='dv6', seed=1)"
kd train tr_feats tr_ali dv_feats dv_ali model "${tiny[@]}" >/dev/null 2>&1

# ---------------------------------------------------------------- tracebacks -> one line
printf 'N\xc9W N EH W\n' >>dict/lexicon.txt
show "non-UTF-8 lexicon" kd prepare-lang dict lang_bad
pyc "import numpy as np; from asr_kd.data.store import RaggedStore, write_store
s = RaggedStore('mfcc_train'); items = [(k, np.array(s[k])) for k in list(s)[:20]]; items[3][1][5, 0] = np.nan
write_store('mfcc_nan', items, meta=dict(s.meta), dtype=s.meta['dtype'])"
show "NaN in MFCC reaching align" kd align mfcc_nan train20 "$ref/data/lang" "$ref/exp/tri1" ali_nan
show "NaN in MFCC reaching train-mono" kd train-mono mfcc_nan train20 "$ref/data/lang" mono_nan
cp -r tr_feats trunc_feats && truncate -s 1000 trunc_feats/data.bin
show "truncated data.bin" kd train trunc_feats tr_ali dv_feats dv_ali m_trunc "${tiny[@]}"
cp -r model corrupt_model && head -c 3000 model/final.pt >corrupt_model/final.pt
show "corrupt final.pt" kd eval-frames corrupt_model dv_feats dv_ali
cp -r model corrupt_ckpt && rm corrupt_ckpt/final.pt && for f in corrupt_ckpt/checkpoints/*.pt; do head -c 500 "$f" >"$f.x" && mv "$f.x" "$f"; done
show "corrupt checkpoint" kd train tr_feats tr_ali dv_feats dv_ali corrupt_ckpt "${tiny[@]}" --set max_epochs=2
mkdir -p exp_wer/tri1/decode_test && touch exp_wer/tri1/final.mdl && echo '{"wer": 0.1' >exp_wer/tri1/decode_test/wer.json
show "corrupt wer.json" kd report exp_wer --out report_wer
show "feats and ali swapped in train" kd train tr_ali tr_feats dv_feats dv_ali m_swap "${tiny[@]}"
show "ali-stats on a feature store" kd ali-stats mfcc_train
show "train-lm given a dir" kd train-lm train20 lm.arpa
cp -r tr_feats full_store
show "disk full (ENOSPC simulated in the store writer), old store kept" pyc "
import errno, sys; from asr_kd.data.store import RaggedStoreWriter; from asr_kd.cli import main
def full(self, key, array): raise OSError(errno.ENOSPC, 'No space left on device', str(self.tmp / 'data.bin'))
RaggedStoreWriter.add = full
sys.exit(main(['compute-features', '--nj', '1', 'train20', 'full_store']))"
echo "   full_store after: $(cmp -s tr_feats/data.bin full_store/data.bin && echo unchanged), temp dirs left: $(ls -a | grep -c '\.tmp$')"; echo
printf 'lr: 1e-3\n' >sci.yaml
show "lr: 1e-3 in YAML (was a string)" pyc "from asr_kd.config import load_config; from asr_kd.nnet.train import TrainConfig
print('lr =', repr(load_config(TrainConfig, 'sci.yaml').lr))"
printf 'lr: -0.1\n' >neg.yaml; show "negative lr" kd train tr_feats tr_ali dv_feats dv_ali m_neg --config neg.yaml
printf 'batch_size: 0\n' >bs0.yaml; show "batch_size: 0" kd train tr_feats tr_ali dv_feats dv_ali m_bs0 --config bs0.yaml
printf -- '- lr: 0.1\n' >list.yaml; show "a YAML file that is a list" kd train tr_feats tr_ali dv_feats dv_ali m_list --config list.yaml
cp -r model ckpt6 && rm ckpt6/final.pt
show "checkpoint with another pdf count" kd train tr6_feats tr6_ali dv6_feats dv6_ali ckpt6 "${tiny[@]}"

# ---------------------------------------------------------------- silent nonsense -> refused
show "lr = 1e4 (train_ce 8e11 before)" kd train tr_feats tr_ali dv_feats dv_ali m_lr "${tiny[@]}" --set lr=1e4
show "hidden_dim: 0" kd train tr_feats tr_ali dv_feats dv_ali m_h0 "${tiny[@]}" --set model.hidden_dim=0
show "left_context: -1" kd train tr_feats tr_ali dv_feats dv_ali m_lc "${tiny[@]}" --set left_context=-1
show "max_epochs: 0" kd train tr_feats tr_ali dv_feats dv_ali m_me "${tiny[@]}" --set max_epochs=0
show "min_epochs > max_epochs" kd train tr_feats tr_ali dv_feats dv_ali m_mm "${tiny[@]}" --set max_epochs=3 --set min_epochs=5
show "top_k > pdfs" kd cache-teacher model --feats dv_feats --out cache_k --top-k 50
show "--first 0" kd subset-data-dir --first 0 train20 first0
show "--stage 9 --stop-stage 2" bash "$repo/recipes/an4/run.sh" --stage 9 --stop-stage 2
show "--stage abc" bash "$repo/recipes/an4/run.sh" --stage abc
head -n 10 "$ref/data/train/text" >ref10.txt && head -n 5 ref10.txt >hyp5.txt
show "score with half the hypotheses missing" kd score ref10.txt hyp5.txt score_half

# ---------------------------------------------------------------- config merge, assert
printf 'loss: {terms: {soft_kl: 1.0}}\n' >kl.yaml
show "loss: {terms: {soft_kl: 1.0}} replaces the default terms" pyc "from asr_kd.config import load_config
from asr_kd.distill.distill import DistillConfig; print('loss.terms =', load_config(DistillConfig, 'kl.yaml').loss.terms)"
show "assert statements in asr_kd/" bash -c "grep -rnE '^\s*assert ' '$repo/asr_kd' | wc -l | sed 's/^/assert lines: /'"

# ---------------------------------------------------------------- fix-data-dir, BOM, truncated audio
cp -r train20 fixme && { printf '\xef\xbb\xbf'; cat train20/text; } >fixme/text.new && mv fixme/text.new fixme/text
show "UTF-8 BOM in text" kd validate-data-dir fixme
first=$(head -n1 train20/text | cut -d' ' -f1); echo "$first SOMETHING ELSE" >>fixme/text
show_all "fix-data-dir: BOM removed, conflicting duplicate reported, backup kept" "BOM|conflicting|backed up|utterances" \
  kd fix-data-dir fixme
echo "   backup: $(ls fixme/.backup | tr '\n' ' ')"; echo
mkdir -p trunc && utt=$(head -n1 train20/wav.scp | cut -d' ' -f1)
pyc "import soundfile as sf; from asr_kd.data.audio import load_utterance
sf.write('trunc/full.wav', load_utterance('train20', '$utt'), 16000, subtype='PCM_16')"
head -c $(( $(stat -c %s trunc/full.wav) / 2 )) trunc/full.wav >trunc/half.wav
kd subset-data-dir --first 1 train20 trunc/d >/dev/null && echo "$utt $work/trunc/half.wav" >trunc/d/wav.scp
show "WAV truncated to half its bytes" kd compute-features --nj 1 trunc/d trunc/feats

# ---------------------------------------------------------------- leftovers of a killed run
"$py" -m asr_kd compute-features --nj 1 "$ref/data/train" killed_feats >/dev/null 2>&1 &
pid=$!; for _ in $(seq 100); do ls -a | grep -q '^\.killed_feats.*\.tmp$' && break; sleep 0.2; done; sleep 1
kill -9 $pid; wait $pid 2>/dev/null
echo "## killed compute-features: leftovers, then the next run"
echo "before: $(find . -maxdepth 2 -name '.*.tmp' | grep -c killed_feats) temp dir(s) of the killed run"
kd subset-data-dir --first 5 "$ref/data/train" train5 >/dev/null
kd compute-features --nj 1 train5 killed_feats >/dev/null 2>&1
echo "after the next run: $(find . -maxdepth 2 -name '.*.tmp' | grep -c killed_feats) temp dir(s)"; echo

# ---------------------------------------------------------------- newcomer path
mkdir -p norepo && cp -r "$repo/recipes" norepo/recipes
show "recipe without the venv activated (a checkout without .venv)" env -i PATH=/usr/bin:/bin HOME="$work" bash norepo/recipes/an4/run.sh
mkdir -p caller && (cd caller && show "relative --train-dir resolves against the caller's dir" bash "$repo/recipes/kaldi_dir/run.sh" \
  --python "$py" --train-dir mydata/train --dev-dir mydata/dev --test-dir mydata/test --dict-dir mydata/dict \
  --data out/data --exp out/exp --stop-stage 0)
mkdir -p rate8 && "$py" -c "import numpy as np, soundfile as sf; sf.write('rate8/a.wav', np.zeros(8000), 8000, subtype='PCM_16'); sf.write('rate8/st.wav', np.zeros((16000, 2)), 16000, subtype='PCM_16')"
kd subset-data-dir --first 1 train20 rate8/d >/dev/null && echo "$utt $work/rate8/a.wav" >rate8/d/wav.scp
show "8 kHz audio into a 16 kHz config" kd compute-features --nj 1 rate8/d rate8/f
show "... the hint as written: --set resample=true" kd compute-features --nj 1 rate8/d rate8/f --set resample=true
kd subset-data-dir --first 1 train20 rate8/s >/dev/null && echo "$utt $work/rate8/st.wav" >rate8/s/wav.scp
show "stereo audio" kd compute-features --nj 1 rate8/s rate8/fs
show "... the hint as written: --set channel=0" kd compute-features --nj 1 rate8/s rate8/fs --set channel=0
kd subset-data-dir --first 120 "$ref/data/train" train120 >/dev/null
show_all "train-tri --num-leaves auto (sizes from the hours in the feature store)" "train-tri:|tree:" kd train-tri --nj 2 --num-leaves auto --tot-gauss auto \
  --set num_iters=2 mfcc_train train120 "$ref/data/lang" "$ref/exp/tri1_ali" tri_auto
show_all "train-tri --num-leaves 2000 on 120 utterances: far fewer leaves than asked" "WARNING.*tree:" kd train-tri --nj 2 --num-leaves 2000 \
  --tot-gauss 4000 --set num_iters=2 mfcc_train train120 "$ref/data/lang" "$ref/exp/tri1_ali" tri_big
echo "work dir: $work"

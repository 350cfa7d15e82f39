# Defaults of the shared hybrid DNN-HMM + distillation stages (recipes/utils/hybrid_kd.sh).
# Sourced by every recipes/<corpus>/run.sh BEFORE parse_options.sh, so each is a --option there.
# Sizes here fit the 2-core CPU budget (AN4 end to end in about 9 min); conf/gpu.conf has the paper's.
option_files+=("${BASH_SOURCE[0]}")

stage=0                  # first stage to run (0 = data prep)
stop_stage=9             # last stage to run (9 = report)
data=data                # data root: data dirs, dict, lang, LM, feature stores
exp=exp                  # experiment root: models, alignments, decodes, logs, report
gmm_exp=                 # root of stages 3-4 (mono, tri1, alignments, graph); empty = --exp. For more
                         # seeds on the same labels: --stage 5 --seed 2 --exp exp_seed2 --gmm-exp exp
seed=1                   # DNN seeds: baseline and students $seed, members 100*(seed-1)+2 onwards
mfcc_conf=conf/mfcc.yaml        # GMM features (compute-features config)
fbank_conf=conf/fbank.yaml      # DNN features (compute-features config)
dnn_conf=conf/dnn.yaml          # baseline and ensemble members (TrainConfig)
distill_conf=conf/distill.yaml  # students (DistillConfig); the size options below override both
python=${PYTHON:-}        # a Python with asr_kd; empty: the repo's .venv/bin/python, else python3 if it imports asr_kd
nj=2                     # parallel jobs (shards of utterances): features, GMM training and alignment, decoding
dnn_jobs=1               # independent DNN steps run at once (baseline next to the ensemble, one student per T),
                         # each single-threaded; 1 on large corpora: each sizes its resident frames by free memory
dask_scheduler=          # tcp://HOST:PORT: run those jobs on a Dask cluster instead of local processes
device=auto              # nnet training / inference device: auto | cpu | cuda | cuda:N
lm_order=2               # n-gram order of the LM trained on the training transcripts
lm=                      # an ARPA LM file to decode with instead (lang_test is built from it); empty = train one
mono_num_utts=2000       # monophones on the N shortest train utterances (Kaldi's LibriSpeech: 2000); 0 = all
mono_tot_gauss=1000      # monophones: total Gaussians (Kaldi's train_mono.sh: 1000; its egs/yesno: 400)
tri_num_utts=5000        # tri1 on N train utterances spread over the set (Kaldi's train_5k); 0 = all.
                         # Every set is then aligned with tri1. AN4 (857 utterances) uses all of them.
num_leaves=auto          # tri1: tied HMM states (= DNN output classes); auto: from the hours of training
                         # audio by Kaldi's recipes' sizes (RM 3.1 h: 1800, WSJ si84 15 h: 2500, LibriSpeech 100 h: 4200)
tot_gauss=auto           # tri1: total Gaussians; auto: as num_leaves (RM 9000, WSJ 15000, LibriSpeech 40000)
gmm_stage=tri1           # GMM whose alignments label the DNNs: tri1 | tri3 (also trains tri2 = LDA+MLLT and
                         # tri3 = SAT with fMLLR after tri1, decodes both: Kaldi's train_lda_mllt/train_sat.sh)
dnn_input=fbank          # DNN input features: fbank | fmllr (tri3's spliced LDA+MLLT+fMLLR, 40 dims per
                         # speaker; needs --gmm-stage tri3; dev/test adapted from first-pass hypotheses)
hidden_layers=2          # DNN depth: baseline, every ensemble member and every student (paper: 8)
hidden_dim=256           # DNN width (paper: 2560)
student_layers=          # student depth; empty = --hidden-layers. A smaller student than the members gets
student_hidden_dim=      # its size in its dir name (student_T<T>_<L>x<D>) and a hard-label twin (dnn_<L>x<D>)
dnn_cmvn=speaker         # CMVN of the DNN features: speaker | utterance | sliding (Kaldi apply-cmvn-sliding,
                         # 600 frames centred): the last two need no speaker stats, so a packaged model sees at
                         # test time what it saw in training. Not speaker: features in $data/fbank_<cmvn>; use a new --exp
package=true             # stage 8: package the student with the best dev frame accuracy (exp/deploy/package),
                         # evaluate it fp32 and int8 (exp/deploy/eval_<backend>_test.json, read by the report)
max_epochs=6             # upper bound on epochs of every DNN (newbob may stop earlier)
num_members=4            # K: ensemble members, differing by seed (paper: 10)
decode_members=1         # members decoded to WER (the others get frame metrics only)
temperatures="1 2 5"     # distillation temperatures, one student each (paper: 1 2 5 10)
hard_weight=0.5          # weight of the hard-label CE term next to the soft term (paper: 0.5)
combination=arith        # how the ensemble teacher combines members: arith | geo
teacher_cache=true       # true: cache the ensemble's targets (cache-teacher) instead of running it per batch
regularizer_fraction=0   # >0: also run the paper's §6 experiment on this fraction of train (e.g. 0.03)
regularizer_epochs=60    # §6 models' epoch budget (3% of the data needs far more than --max-epochs)
lm_weights=5:50          # LM weights (1 / acoustic scale) scored on the dev lattices (FIRST:LAST or a list);
                         # test lattices are scored at the dev-best (LM weight, penalty)
word_penalties=0,0.5,1   # word insertion penalties scored on the dev lattices (Kaldi's score.sh: 0 0.5 1)
beam=11.0                # decoder beam (Kaldi's default 13 decodes AN4 dev to the same WER, 2x slower)
max_active=7000          # decoder: most active states per frame
score_map=               # token map applied to ref and hyp before scoring (TIMIT: 48 -> 39 phones); empty = none
speed_perturb=""         # e.g. "0.9 1.0 1.1": DNNs train on train_sp (Kaldi's 3-way speed perturbation),
                         # aligned with tri1; empty = off (no gain shown on AN4: recipes/an4/README.md)
keep_loglikes=false      # keep the per-system log-likelihood stores after decoding (large)

"""CLI: train-specialists, eval-specialists (paper §5; thin wrappers of distill/specialist_runs.py).

The config is a `SpecialistConfig` YAML (clustering, sampling, `train:` a TrainConfig for the
specialists' optimiser and epochs) with dotted overrides, e.g. `--set num_clusters=20 --set train.max_epochs=2`.
"""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-specialists", help="cluster pdfs by the generalist's predictions; one specialist "
                       "per cluster (paper §5), resumable")
    p.add_argument("generalist", help="model dir of the generalist (one model)")
    p.add_argument("feats", help="training feature store")
    p.add_argument("ali", help="its alignment store")
    p.add_argument("dev_feats")
    p.add_argument("dev_ali")
    p.add_argument("exp_dir")
    p.add_argument("--config", help="YAML SpecialistConfig")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--cluster-with", action="append", metavar="DIR",
                   help="cluster the predictions of this model/ensemble dir instead of the generalist's (repeatable)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval-specialists", help="frame accuracy of generalist vs generalist + specialists, "
                       "by # specialists covering the correct pdf (paper Table 4) -> OUT_STEM.{json,md}")
    p.add_argument("exp_dir", help="a train-specialists exp dir")
    p.add_argument("--eval", required=True, action="append", nargs=3, metavar=("NAME", "FEATS", "ALI"),
                   help="a labelled set to score (repeatable), e.g. --eval test data/fbank/test exp/tri1_ali_test")
    p.add_argument("--out-stem", help="default: EXP_DIR/specialist_table")
    p.add_argument("--top-n", type=int, help="default: the config's top_n")
    p.add_argument("--loglikes-dir", help="also write DIR/loglikes_NAME: combined log-likelihoods of each --eval set "
                   "(for `asr-kd decode --loglikes`); needs --priors")
    p.add_argument("--priors", help="alignment dir with priors.npy (the generalist's training alignment)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_eval)


def _train(args) -> None:
    from asr_kd.config import load_config
    from asr_kd.distill.specialist_runs import SpecialistConfig, train_specialists
    from asr_kd.nnet.frames import FrameData

    cfg = load_config(SpecialistConfig, args.config, args.set)
    train = FrameData.load(args.feats, args.ali, device=args.device)
    dev = FrameData.load(args.dev_feats, args.dev_ali, device=args.device)
    dirs = train_specialists(cfg, args.generalist, train, dev, args.exp_dir, cluster_with=args.cluster_with)
    print(json.dumps({"exp_dir": args.exp_dir, "specialists": [d.name for d in dirs]}))


def _eval(args) -> None:
    from asr_kd.distill.specialist_runs import (evaluate_specialists, read_config, specialist_markdown,
                                                write_combined_loglikes)
    from asr_kd.errors import AsrKdError
    from asr_kd.nnet.frames import FrameData
    from asr_kd.nnet.infer import read_priors

    if args.loglikes_dir and not args.priors:
        raise AsrKdError("--loglikes-dir needs --priors (the training alignment dir with priors.npy)")
    cfg = read_config(args.exp_dir)
    sets = {name: FrameData.load(feats, ali, device=args.device) for name, feats, ali in args.eval}
    stem = args.out_stem or f"{args.exp_dir}/specialist_table"
    record = evaluate_specialists(args.exp_dir, sets, stem, top_n=args.top_n or cfg.top_n, iters=cfg.combine_iters,
                                  device=args.device)
    print(specialist_markdown(record))
    if args.loglikes_dir:
        priors = read_priors(args.priors)
        for name, data in sets.items():
            out = write_combined_loglikes(args.exp_dir, data, f"{args.loglikes_dir}/loglikes_{name}", priors,
                                          top_n=args.top_n or cfg.top_n, iters=cfg.combine_iters, device=args.device)
            print(json.dumps({"loglikes": str(out), "set": name}))

"""CLI: cache-teacher, distill, born-again, mutual, distill-sweep, regularizer, distill-compare (thin wrappers
of distill/*.py).

The run config is a `DistillConfig` YAML (`student:` a TrainConfig, `loss:`, `teacher:`) with
dotted overrides, e.g. `--set loss.temperature=5 --set student.model.hidden_layers=4`.
An alignment argument of `none` makes the transfer set unlabelled (hard term off).
"""
from __future__ import annotations

import argparse
import json

from asr_kd.config import to_dict
from asr_kd.parallel import add_job_args, jobs_from_args
from asr_kd.steps.outputs import add_step_args, step_output

NONE = "none"
BUDGET_GB = 64.0  # full fp16 teacher targets up to this size; LibriSpeech-100 at 2,000 pdfs (~144 GB) gets top-k


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache-teacher", help="run a teacher over a feature store once; store its targets per utterance")
    p.add_argument("models", nargs="+", help="teacher model dir(s), final.pt file(s) or an ensemble dir")
    p.add_argument("--feats", required=True, help="feature store of the transfer set")
    p.add_argument("--out", required=True, help="cache dir to write")
    p.add_argument("--combination", default="arith", choices=["arith", "geo"],
                   help="arith: probabilities at --temperature; geo: mean logits (any temperature later)")
    p.add_argument("--temperature", type=float, help="needed for arith")
    p.add_argument("--top-k", type=int, help="keep the k most probable pdfs per frame (0 = all); default: all if "
                   "full fp16 targets fit --budget-gb, else the top 20")
    p.add_argument("--budget-gb", type=float, default=BUDGET_GB, help="largest full fp16 cache to write without --top-k")
    p.add_argument("--batch-frames", type=int, default=8192, help="frames per stacked forward pass of all members")
    p.add_argument("--block-frames", type=int, default=1 << 18,
                   help="frames of whole utterances read and written per block (the unit of resume and of memory)")
    p.add_argument("--device", default="cpu")
    add_job_args(p)
    add_step_args(p)
    p.set_defaults(func=_cache_teacher)

    p = sub.add_parser("distill", help="train a student on a teacher's soft targets (+ hard labels)")
    _run_args(p)
    p.add_argument("exp_dir")
    p.add_argument("--subset-fraction", type=float, help="use this random fraction of the transfer utterances")
    p.add_argument("--subset-seed", type=int, default=0)
    add_step_args(p)
    p.set_defaults(func=_distill)

    p = sub.add_parser("born-again", help="G generations of one student architecture, n+1 distilled from n")
    _run_args(p)
    p.add_argument("exp_root", help="writes gen_1/ .. gen_G/ and born_again.json")
    p.add_argument("--generations", type=int, default=2)
    p.set_defaults(func=_born_again)

    p = sub.add_parser("mutual", help="K peers trained together by mutual learning (hard CE + KL to the others)")
    _run_args(p)
    p.add_argument("exp_dir", help="writes peer_<k>/, group/ and mutual.json")
    p.add_argument("--k", type=int, default=2, help="number of peers")
    p.set_defaults(func=_mutual)

    p = sub.add_parser("distill-sweep", help="one student per temperature x hard weight; table of frame accuracies")
    _run_args(p)
    p.add_argument("exp_root")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1, 2, 5, 10])
    p.add_argument("--hard-weights", type=float, nargs="+", default=[0.0, 0.5])
    p.add_argument("--soft-term", default="soft_ce", choices=["soft_ce", "soft_kl", "logit_mse"])
    p.add_argument("--test-feats")
    p.add_argument("--test-ali")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("regularizer", help="paper §6: hard vs soft targets on a small fraction of the training set")
    _run_args(p)
    p.add_argument("test_feats")
    p.add_argument("test_ali")
    p.add_argument("exp_root")
    p.add_argument("--fraction", type=float, default=0.03, help="fraction of training utterances")
    p.add_argument("--seed", type=int, default=0, help="which utterances")
    p.add_argument("--baseline", help="an already trained full-data model of the student architecture")
    p.set_defaults(func=_regularizer)

    p = sub.add_parser("distill-compare", help="students vs hard-label baseline vs teacher: frame accuracy, %% of gain kept")
    p.add_argument("out_stem", help="writes OUT_STEM.json and OUT_STEM.md")
    p.add_argument("--baseline", required=True, help="model dir: the student architecture trained on hard labels")
    p.add_argument("--teacher", required=True, action="append", help="teacher model/ensemble dir (repeatable)")
    p.add_argument("--combination", default="arith", choices=["arith", "geo"])
    p.add_argument("--student", required=True, action="append", help="distilled model dir (repeatable)")
    p.add_argument("--eval", required=True, action="append", nargs=3, metavar=("NAME", "FEATS", "ALI"),
                   help="a labelled set to score on (repeatable), e.g. --eval test data/fbank/test exp/tri1_ali_test")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_compare)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("feats", help="transfer set feature store")
    p.add_argument("ali", help=f"its alignment store, or '{NONE}' (unlabelled transfer data)")
    p.add_argument("dev_feats")
    p.add_argument("dev_ali")
    p.add_argument("--config", help="YAML DistillConfig (student:, loss:, teacher:)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--teacher", action="append", help="teacher model/ensemble dir (repeatable; sets teacher.models)")
    p.add_argument("--teacher-cache", help="teacher cache dir (sets teacher.cache)")
    p.add_argument("--combination", choices=["arith", "geo"], help="sets teacher.combination")


def _config(args):
    """The resolved DistillConfig of the shared arguments."""
    from asr_kd.config import load_config
    from asr_kd.distill.distill import DistillConfig

    overrides = list(args.set)
    if args.teacher:
        overrides.append(f"teacher.models={json.dumps(args.teacher)}")
    if args.teacher_cache:
        overrides.append(f"teacher.cache={json.dumps(args.teacher_cache)}")
    if args.combination:
        overrides.append(f"teacher.combination={args.combination}")
    return load_config(DistillConfig, args.config, overrides)


def _load(args, cfg=None, with_teacher: bool = True):
    """(config, transfer set, dev set, teacher) from the shared arguments."""
    from asr_kd.distill.cache import feature_config_hash
    from asr_kd.distill.distill import load_teacher
    from asr_kd.nnet.devices import training_device
    from asr_kd.nnet.stream import open_frames

    cfg = cfg or _config(args)
    device = training_device(cfg.student.device)  # under torchrun: this rank's own device
    budget = cfg.student.data.max_resident_frames
    transfer = open_frames(args.feats, None if args.ali == NONE else args.ali, device=device, budget=budget)
    dev = open_frames(args.dev_feats, args.dev_ali, device=device, budget=budget)
    teacher = load_teacher(cfg.teacher, cfg.loss.temperature, feature_config_hash=feature_config_hash(args.feats),
                           feature_store=args.feats, device=device) if with_teacher and cfg.loss.needs_teacher else None
    return cfg, transfer, dev, teacher


def _cache_teacher(args) -> None:
    from asr_kd.data.store import RaggedStore
    from asr_kd.distill.cache import choose_top_k, feature_config_hash, write_cache
    from asr_kd.distill.teachers import OnlineTeacher

    with step_output(args, "out", ("models", "feats")) as claim:
        if claim.done:
            return
        feats = RaggedStore(args.feats)  # memory-mapped: write_cache reads it block by block
        teacher = OnlineTeacher.load(args.models, args.combination, args.device)
        top_k = choose_top_k(int(feats.offsets[-1]), teacher.num_pdfs, args.top_k, args.budget_gb * 1e9)
        report = write_cache(args.out, teacher, feats, temperature=args.temperature, top_k=top_k,
                             feature_config_hash=feature_config_hash(args.feats), batch_frames=args.batch_frames,
                             block_frames=args.block_frames, jobs=jobs_from_args(args))
    print(json.dumps({"out": args.out, **report.as_dict()}))


def _distill(args) -> None:
    from asr_kd.distill.distill import distill, transfer_subset
    from asr_kd.expdir import write_system
    from asr_kd.nnet.commands import end_process_group, system_fields
    from asr_kd.nnet.devices import is_main_process
    from asr_kd.nnet.infer import evaluate

    config = _config(args)
    inputs = ("feats", "ali", "dev_feats", "dev_ali", "teacher", "teacher_cache")
    with step_output(args, "exp_dir", inputs, to_dict(config)) as claim:
        if claim.done:
            return
        cfg, transfer, dev, teacher = _load(args, config)
        if args.subset_fraction:
            transfer = transfer_subset(transfer, args.subset_fraction, args.subset_seed)
        result = distill(cfg.student, teacher, transfer, cfg.loss, dev=dev, exp_dir=args.exp_dir, data_parallel=True,
                         hidden=cfg.hidden, fake_int8=cfg.fake_int8)
        if is_main_process():
            write_system(args.exp_dir, "student", **system_fields(cfg.student, result.train.best_epoch),
                         temperature=cfg.loss.temperature, loss_terms=dict(cfg.loss.terms),
                         teacher={"combination": cfg.teacher.combination, "models": list(cfg.teacher.models),
                                  "cache": cfg.teacher.cache})
            metrics = evaluate((result.model, result.spec), dev)
            print(json.dumps({"exp_dir": str(result.exp_dir), "best_epoch": result.train.best_epoch,
                              "dev_frame_acc": metrics["frame_acc"], "dev_ce": metrics["ce"]}))
    end_process_group()


def _born_again(args) -> None:
    from asr_kd.distill.born_again import born_again

    cfg, transfer, dev, teacher = _load(args)
    results = born_again(cfg.student, teacher, transfer, cfg.loss, dev=dev, exp_root=args.exp_root,
                         generations=args.generations, combination=cfg.teacher.combination)
    for g, r in enumerate(results, 1):
        print(json.dumps({"generation": g, "exp_dir": str(r.exp_dir), "best_epoch": r.train.best_epoch,
                          "dev_frame_acc": r.train.dev_frame_acc[0]}))


def _mutual(args) -> None:
    from asr_kd.distill.mutual import train_mutual

    cfg, transfer, dev, _ = _load(args, with_teacher=False)
    dirs = train_mutual(cfg.student, args.k, transfer, dev, args.exp_dir, cfg.loss)
    print(json.dumps({"peers": [str(d) for d in dirs]}))


def _sweep(args) -> None:
    from asr_kd.distill.experiments import sweep
    from asr_kd.nnet.stream import open_frames

    cfg, transfer, dev, teacher = _load(args)
    budget = cfg.student.data.max_resident_frames
    test = open_frames(args.test_feats, args.test_ali, device=dev.device, budget=budget) if args.test_feats else None
    sweep(cfg.student, teacher, transfer, dev=dev, exp_root=args.exp_root, temperatures=args.temperatures,
          hard_weights=args.hard_weights, soft_term=args.soft_term, test=test)


def _regularizer(args) -> None:
    from asr_kd.distill.experiments import regularizer_experiment
    from asr_kd.nnet.stream import open_frames

    cfg, train, dev, teacher = _load(args)
    test = open_frames(args.test_feats, args.test_ali, device=dev.device, budget=cfg.student.data.max_resident_frames)
    regularizer_experiment(cfg.student, teacher, train, dev=dev, test=test, exp_root=args.exp_root,
                           fraction=args.fraction, seed=args.seed, loss_cfg=cfg.loss, baseline_dir=args.baseline)


def _compare(args) -> None:
    from asr_kd.distill.experiments import compare
    from asr_kd.distill.teachers import OnlineTeacher
    from asr_kd.nnet.stream import open_frames

    sets = {name: open_frames(feats, ali, device=args.device) for name, feats, ali in args.eval}
    teacher = OnlineTeacher.load(args.teacher, args.combination, args.device)
    compare(args.baseline, teacher, args.student, sets=sets, out_stem=args.out_stem)

"""CLI: train, train-ensemble, compute-loglikes, eval-frames."""
from __future__ import annotations

import argparse
import json

from asr_kd.config import to_dict
from asr_kd.errors import AsrKdError
from asr_kd.expdir import write_system
from asr_kd.steps.outputs import add_step_args, step_output
from asr_kd.steps.tree import check_same_tree, tree_of_dir

TRAIN_INPUTS = ("feats", "ali", "dev_feats", "dev_ali")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one frame classifier (features + pdf alignments -> exp dir)")
    _train_args(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("train-ensemble", help="train K frame classifiers differing by seed (and architecture)")
    _train_args(p)
    p.add_argument("--k", type=int, default=4, help="members per architecture (seeds seed, seed+1, ...)")
    p.add_argument("--architectures", help="YAML list of model blocks (default: the config's model)")
    p.add_argument("--sequential", action="store_true", help="train members one by one, not stacked")
    p.set_defaults(func=_train_ensemble)

    p = sub.add_parser("compute-loglikes", help="model/ensemble -> per-utterance log-likelihoods (store)")
    p.add_argument("models", nargs="+", help="model dir(s), final.pt file(s) or an ensemble dir")
    p.add_argument("feats", help="feature store")
    p.add_argument("priors", help="alignment dir with priors.npy (or the .npy file); 'none' = log posteriors")
    p.add_argument("out", help="output store")
    _scoring_args(p)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    add_step_args(p)
    p.set_defaults(func=_compute_loglikes)

    p = sub.add_parser("eval-frames", help="frame accuracy and CE of a model/ensemble against alignments")
    p.add_argument("models", nargs="+", help="model dir(s), final.pt file(s) or an ensemble dir")
    p.add_argument("feats", help="feature store")
    p.add_argument("ali", help="alignment store")
    _scoring_args(p)
    p.add_argument("--out", help="also write the result as JSON here")
    p.set_defaults(func=_eval_frames)


def _train_args(p: argparse.ArgumentParser) -> None:
    for name in ("feats", "ali", "dev_feats", "dev_ali", "exp_dir"):
        p.add_argument(name)
    p.add_argument("--config", help="YAML TrainConfig")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    add_step_args(p)


def _scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--combine", default="arith", choices=["arith", "geo"])
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-resident-frames", default="auto",
                   help="frames (or a size like 8GB) kept on the device; larger sets are streamed (default: auto)")
    p.add_argument("--int8", action="store_true", help="score with dynamic-int8 copies of the models (CPU; nnet/quant.py)")


def _scorer(args):
    """The model dirs, or with --int8 an Ensemble of their dynamic-int8 copies."""
    if not args.int8:
        return args.models
    from asr_kd.nnet.ensemble import Ensemble
    from asr_kd.nnet.quant import int8_dynamic

    ens = Ensemble.load(args.models)
    int8 = Ensemble([(int8_dynamic(model), spec) for model, spec in ens.members])
    int8.sources = ens.sources  # the files it was made from: the store's identity
    return int8


def _config(args):
    from asr_kd.config import load_config
    from asr_kd.nnet.train import TrainConfig

    return load_config(TrainConfig, args.config, args.set)


def _frames(args, cfg):
    """(train, dev) sets; their alignments must come from one tree."""
    from asr_kd.nnet.devices import training_device
    from asr_kd.nnet.stream import open_frames

    check_same_tree([(f"alignment {args.ali}", tree_of_dir(args.ali)),
                     (f"dev alignment {args.dev_ali}", tree_of_dir(args.dev_ali))])
    device = training_device(cfg.device)  # under torchrun: this rank's own device, never all on cuda:0
    budget = cfg.data.max_resident_frames
    train = open_frames(args.feats, args.ali, device=device, budget=budget)
    return train, open_frames(args.dev_feats, args.dev_ali, device=device, budget=budget)


def _train(args) -> None:
    from asr_kd.nnet.devices import is_main_process
    from asr_kd.nnet.train import train_frame_classifier

    cfg = _config(args)
    with step_output(args, "exp_dir", TRAIN_INPUTS, to_dict(cfg)) as claim:
        if claim.done:
            return
        train, dev = _frames(args, cfg)
        result = train_frame_classifier(cfg, train, dev, exp_dir=args.exp_dir, data_parallel=True)
        if is_main_process():
            write_system(args.exp_dir, "dnn", **system_fields(cfg, result.best_epoch))
            print(json.dumps({"exp_dir": str(result.exp_dir), "best_epoch": result.best_epoch,
                              "dev_frame_acc": result.dev_frame_acc[0]}))
    end_process_group()


def system_fields(cfg, best_epoch: int | None = None) -> dict:
    """A trained model's identity for system.json: seed, sizes, context window, best epoch."""
    from asr_kd.config import to_dict

    fields = {"seed": cfg.seed, "model": to_dict(cfg.model), "left_context": cfg.left_context,
              "right_context": cfg.right_context}
    return fields if best_epoch is None else {**fields, "best_epoch": best_epoch}


def end_process_group() -> None:
    """Leave torchrun's process group cleanly (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _train_ensemble(args) -> None:
    from asr_kd.config import from_dict, parse_yaml
    from asr_kd.io import read_lines
    from asr_kd.nnet.devices import is_main_process
    from asr_kd.nnet.ensemble import member_seeds, train_ensemble
    from asr_kd.nnet.models import ModelConfig

    archs = None
    if args.architectures:
        blocks = parse_yaml("\n".join(line for _, line in read_lines(args.architectures)))
        if not isinstance(blocks, list):
            raise AsrKdError(f"{args.architectures}: expected a YAML list of model blocks")
        archs = [from_dict(ModelConfig, b, f"{args.architectures}[{i}]") for i, b in enumerate(blocks)]
    cfg = _config(args)
    with step_output(args, "exp_dir", (*TRAIN_INPUTS, "architectures"), to_dict(cfg)) as claim:
        if claim.done:
            return
        train, dev = _frames(args, cfg)
        dirs = train_ensemble(cfg, args.k, train, dev, args.exp_dir, architectures=archs,
                              stacked=not args.sequential)
        if is_main_process():
            write_system(args.exp_dir, "ensemble", **system_fields(cfg), members=[d.name for d in dirs],
                         seeds=member_seeds(cfg, args.k) * len(archs or [cfg.model]))
        print(json.dumps({"members": [str(d) for d in dirs]}))


def _compute_loglikes(args) -> None:
    from asr_kd.nnet.infer import compute_loglikes, read_priors

    priors = None if args.priors == "none" else read_priors(args.priors)
    inputs = ("models", "feats") if args.priors == "none" else ("models", "feats", "priors")
    with step_output(args, "out", inputs, replaced_whole=True) as claim:
        if claim.done:
            return
        store = compute_loglikes(_scorer(args), args.feats, args.out, priors=priors, temperature=args.temperature,
                                 combine=args.combine, dtype=args.dtype, device=args.device,
                                 budget=args.max_resident_frames,
                                 priors_source=None if args.priors == "none" else args.priors)
    print(json.dumps({"out": str(store.path), "utterances": len(store), "frames": store.meta["num_rows"]}))


def _eval_frames(args) -> None:
    from asr_kd.io import write_json
    from asr_kd.nnet.infer import evaluate

    result = evaluate(_scorer(args), args.feats, args.ali, combine=args.combine, temperature=args.temperature,
                      device=args.device, budget=args.max_resident_frames)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result))

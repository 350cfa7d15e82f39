"""CLI for features: compute-features, export-kaldi-feats, import-kaldi-feats, write-feats (thin wrappers)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from asr_kd.config import load_config
from asr_kd.data.features import CmvnConfig, FeatureConfig, compute_features, default_num_jobs
from asr_kd.data.kaldi_io import export_kaldi, import_kaldi
from asr_kd.parallel import add_job_args, jobs_from_args
from asr_kd.steps.outputs import add_step_args, step_output


@dataclass
class FeatureJobConfig(FeatureConfig):
    """The YAML of compute-features: FeatureConfig's keys at top level plus a `cmvn:` section."""
    cmvn: CmvnConfig = field(default_factory=CmvnConfig)

    def split(self) -> tuple[FeatureConfig, CmvnConfig]:
        names = [f.name for f in dataclasses.fields(FeatureConfig)]
        return FeatureConfig(**{n: getattr(self, n) for n in names}), self.cmvn


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compute-features", help="fbank/MFCC (+CMVN, deltas) of a data dir into a feature store")
    p.add_argument("data_dir")
    p.add_argument("out_dir")
    p.add_argument("--config", help="YAML with FeatureConfig keys and a `cmvn:` section")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set kind=mfcc --set deltas=2 --set cmvn.var=true")
    add_job_args(p, default_nj=default_num_jobs())
    p.add_argument("--num-jobs", dest="nj", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old --nj
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable/too-short utterances (listed in meta)")
    add_step_args(p)
    p.set_defaults(func=run_compute)

    p = sub.add_parser("export-kaldi-feats", help="feature store -> Kaldi ark + scp")
    p.add_argument("store")
    p.add_argument("ark")
    p.add_argument("scp")
    p.set_defaults(func=run_export)

    p = sub.add_parser("import-kaldi-feats", help="Kaldi feats.scp (or .ark) -> feature store")
    p.add_argument("table")
    p.add_argument("out_dir")
    p.add_argument("--frame-shift-ms", type=float, default=10.0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--cmvn-applied", choices=["yes", "no", "unknown"], default="unknown",
                   help="whether the Kaldi features already have CMVN applied")
    p.set_defaults(func=run_import)

    p = sub.add_parser("write-feats", help="a feature view (e.g. fMLLR-adapted, from adapt-feats) -> feature store")
    p.add_argument("view")
    p.add_argument("out_dir")
    p.set_defaults(func=run_write_feats)


def run_compute(args) -> None:
    job_cfg = load_config(FeatureJobConfig, args.config, args.set)
    feat_cfg, cmvn_cfg = job_cfg.split()
    with step_output(args, "out_dir", ("data_dir",), dataclasses.asdict(job_cfg), replaced_whole=True) as claim:
        if claim.done:
            return
        store = compute_features(args.data_dir, args.out_dir, feat_cfg, cmvn_cfg,
                                 jobs=jobs_from_args(args), skip_bad=args.skip_bad)
    meta = store.meta
    print(f"{store.path}: {meta['num_utts']} utterances, {meta['num_frames']} frames, dim {meta['dim']}, "
          f"{len(meta['skipped'])} skipped, config_hash {meta['config_hash']}")


def run_export(args) -> None:
    count = export_kaldi(args.store, args.ark, args.scp)
    print(f"{args.scp}: {count} utterances")


def run_import(args) -> None:
    applied = {"yes": True, "no": False, "unknown": None}[args.cmvn_applied]
    store = import_kaldi(args.table, args.out_dir, {"frame_shift_ms": args.frame_shift_ms,
                                                   "sample_rate": args.sample_rate, "cmvn": {"applied": applied}})
    print(f"{store.path}: {len(store)} utterances, {store.meta['num_frames']} frames, dim {store.meta['dim']}")


def run_write_feats(args) -> None:
    from asr_kd.data.feature_view import materialize

    store = materialize(args.view, args.out_dir)
    print(f"{store.path}: {len(store)} utterances, {store.meta['num_frames']} frames, dim {store.meta['dim']}")

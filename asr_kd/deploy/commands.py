"""CLI: package, transcribe, eval-package (thin wrappers of deploy/*.py)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from asr_kd.errors import AsrKdError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("package", help="trained model + graph -> self-contained model package (transcribe, ONNX)")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR",
                   help="the network's exp dir (final.pt; decode_test/tuning.json if tuned on dev); several: the one "
                        "with the best dev frame accuracy (eval_dev.json) is packaged")
    p.add_argument("--graph", required=True, help="HCLG graph dir (its parent holds tree + final.mdl, or --hmm-dir)")
    p.add_argument("--feats", required=True, help="the network's training feature store (feature and CMVN config)")
    p.add_argument("--ali", required=True, help="the training alignment dir (priors.npy)")
    p.add_argument("--lang", required=True, help="lang dir (phones/align_lexicon.txt for word times)")
    p.add_argument("--hmm-dir", help="dir with tree and final.mdl (default: the graph's parent)")
    p.add_argument("--tuning", help="tuning.json with the decode settings chosen on dev (default: MODEL_DIR/decode_test/)")
    p.add_argument("--no-onnx", action="store_true", help="skip am.onnx even when onnx is installed")
    p.add_argument("--out", required=True, help="package dir to write")
    p.set_defaults(func=_package)

    p = sub.add_parser("transcribe", help="audio files (WAV, FLAC, SPHERE; any rate) -> words with a model package")
    p.add_argument("package")
    p.add_argument("audio", nargs="+")
    p.add_argument("--format", choices=["text", "json", "ctm"], default="text")
    p.add_argument("--backend", choices=["torch", "int8", "onnx"], default="torch")
    p.add_argument("--channel", type=int, help="channel of multi-channel files (0-based)")
    p.set_defaults(func=_transcribe)

    p = sub.add_parser("eval-package", help="frame accuracy and WER of a package's backend on a prepared set")
    p.add_argument("package")
    p.add_argument("feats", help="feature store of the set (the package's feature config)")
    p.add_argument("ali", help="alignment store of the set (frame labels)")
    p.add_argument("--text", help="reference text: also decode and score WER")
    p.add_argument("--backend", choices=["torch", "int8", "onnx"], default="torch")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.set_defaults(func=_eval_package)


def _package(args) -> None:
    from asr_kd.deploy.package import make_package

    pkg = make_package(args.model_dirs, args.graph, args.out, feats=args.feats, ali=args.ali, lang=args.lang,
                       hmm_dir=args.hmm_dir, tuning=args.tuning, onnx=False if args.no_onnx else None)
    d = pkg.decode
    chosen = pkg.meta["chosen_on_dev"]
    print(f"{pkg.path}: {chosen['chosen']} (dev frame acc of the candidates: {chosen['dev_frame_acc']})")
    print(f"{pkg.path}: {len(pkg.meta['files'])} files, CMVN {pkg.meta['cmvn_inference']['per']} at inference "
          f"(trained: {pkg.meta['cmvn_trained']['per']}), acoustic scale {d['acoustic_scale']:g}, "
          f"word penalty {d['word_penalty']:g}, onnx {'yes' if pkg.has_onnx else 'no'}")


def _transcribe(args) -> None:
    """Every file is tried; a bad one prints its error line and the command fails at the end."""
    from asr_kd.deploy.transcribe import load_model

    model = load_model(args.package, args.backend)
    failed = 0
    for path in args.audio:
        try:
            result = model.transcribe(path, channel=args.channel)
        except AsrKdError as e:
            failed += 1
            print(f"asr-kd transcribe: error: {e}", file=sys.stderr, flush=True)
            continue
        if args.format == "json":
            print(json.dumps(result.as_dict()), flush=True)
        elif args.format == "ctm":
            print(result.ctm(channel=1), end="", flush=True)
        else:
            print(f"{path} {result.text}", flush=True)
    if failed:
        raise AsrKdError(f"{failed} of {len(args.audio)} files failed (see the lines above)")


def _eval_package(args) -> None:
    from asr_kd.deploy.evaluate import evaluate_package
    from asr_kd.io import write_json

    result = evaluate_package(args.package, args.feats, args.ali, args.text, args.backend)
    write_json(args.out, result)
    wer = f", WER {result['wer']['wer']:.2f}%" if "wer" in result else ""
    print(f"{args.package} [{args.backend}]: frame acc {100 * result['frame_acc']:.2f}%{wer}, "
          f"AM {result['am_ms_per_s']:.2f} ms per s of audio, {result['params']} params")

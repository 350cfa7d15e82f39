"""CLI: make-graph, decode (GMM features or log-likelihood store; optional tuning on dev), score."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.parallel import add_job_args
from asr_kd.steps.outputs import add_step_args, step_output
from asr_kd.steps.tree import check_same_tree, tree_of_dir

DECODE_INPUTS = ("graph_dir", "model_dir", "feats", "loglikes", "text", "dev_feats", "dev_loglikes", "dev_text")
SCORE_FILES = ("ref.txt", "per_utt.txt", "wer.json")  # written only with --text; a re-run without removes old ones

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-graph", help="lang_test dir + model dir (tree, final.mdl) -> HCLG graph dir")
    p.add_argument("lang_dir")
    p.add_argument("model_dir")
    p.add_argument("graph_dir")
    p.add_argument("--self-loop-scale", type=float, default=0.1)
    p.set_defaults(func=_make_graph)

    p = sub.add_parser("decode", help="decode a set (GMM on features, or a log-likelihood store) and score it")
    p.add_argument("graph_dir")
    p.add_argument("model_dir", help="dir with final.mdl and tree (the transition model; the GMM for --feats)")
    p.add_argument("out_dir", help="writes hyp.txt (+ ref.txt, per_utt.txt, wer.json with --text)")
    _add_input_args(p, "", "the set to decode")
    p.add_argument("--text", help="reference Kaldi text for scoring")
    p.add_argument("--acoustic-scale", type=float, default=0.1)
    p.add_argument("--word-penalty", type=float, default=0.0, help="cost added per hypothesised word")
    _add_input_args(p, "dev-", "a dev set to choose the acoustic scale and word penalty on (then fixed for this set)")
    p.add_argument("--dev-text", help="reference text of the dev set")
    p.add_argument("--acoustic-scales", help="comma-separated scales tried on dev (default: tune.DEFAULT_SCALES)")
    p.add_argument("--word-penalties", help="comma-separated word insertion penalties tried on dev (default: 0)")
    p.add_argument("--beam", type=float, default=13.0)
    p.add_argument("--lattice-beam", type=float, default=6.0)
    p.add_argument("--max-active", type=int, default=7000)
    add_job_args(p)
    p.add_argument("--num-jobs", dest="nj", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old --nj
    add_step_args(p)
    p.set_defaults(func=_decode)

    p = sub.add_parser("score", help="WER of a hypothesis text against a reference text")
    p.add_argument("ref_text")
    p.add_argument("hyp_text")
    p.add_argument("out_dir")
    p.set_defaults(func=_score)


def _add_input_args(p, prefix: str, what: str) -> None:
    group = p.add_mutually_exclusive_group(required=not prefix)
    group.add_argument(f"--{prefix}feats", help=f"feature store of {what} (scored with the GMM in MODEL_DIR)")
    group.add_argument(f"--{prefix}loglikes", help=f"log-likelihood store (frames x pdfs) of {what}")


def _make_graph(args) -> None:
    from asr_kd.decode.graph import make_graph

    make_graph(args.lang_dir, args.model_dir, args.graph_dir, self_loop_scale=args.self_loop_scale)


def _decode_job(args, dev: bool) -> DecodeJob:
    """What the workers load for one set: the graph, the model, and the set's store (paths only)."""
    from asr_kd.decode.decoder import DecodeJob

    feats, loglikes = (args.dev_feats, args.dev_loglikes) if dev else (args.feats, args.loglikes)
    return DecodeJob(args.graph_dir, str(Path(args.model_dir) / "final.mdl"), source=loglikes or feats,
                     gmm=loglikes is None, beam=args.beam, lattice_beam=args.lattice_beam, max_active=args.max_active)


def _decode(args) -> None:
    model_tree = (f"model dir {args.model_dir}", tree_of_dir(args.model_dir))
    for store in (args.loglikes, args.dev_loglikes):
        if store:
            check_same_tree([model_tree, (f"log-likelihoods {store}", tree_of_dir(store))])
    with step_output(args, "out_dir", DECODE_INPUTS) as claim:
        if not claim.done:
            _decode_into(args)


def _decode_into(args) -> None:
    from asr_kd.decode.decoder import decode_store
    from asr_kd.decode.scoring import read_text_table
    from asr_kd.decode.tune import DEFAULT_PENALTIES, DEFAULT_SCALES, tune_and_decode
    from asr_kd.io import write_json
    from asr_kd.parallel import jobs_from_args

    job, jobs = _decode_job(args, dev=False), jobs_from_args(args)
    settings = {"beam": job.beam, "lattice_beam": job.lattice_beam, "max_active": job.max_active,
                "graph_dir": args.graph_dir, "model_dir": args.model_dir}
    if args.dev_feats or args.dev_loglikes:
        if not args.dev_text:
            raise AsrKdError("--dev-feats/--dev-loglikes need --dev-text to choose the acoustic scale and word penalty")
        scales = _floats(args.acoustic_scales) or DEFAULT_SCALES
        penalties = _floats(args.word_penalties) or DEFAULT_PENALTIES
        tuned = tune_and_decode(_decode_job(args, dev=True), read_text_table(args.dev_text), job, scales, penalties,
                                jobs)
        hyps, stats, scale, penalty = tuned.hyps, tuned.stats, tuned.acoustic_scale, tuned.word_penalty
        write_json(Path(args.out_dir) / "tuning.json", {
            "chosen_acoustic_scale": scale, "chosen_word_penalty": penalty, "tuned_on": args.dev_text,
            "dev": [{"acoustic_scale": s, "word_penalty": p, **r.summary()} for (s, p), r in tuned.dev_wer.items()]})
    else:
        (Path(args.out_dir) / "tuning.json").unlink(missing_ok=True)  # an earlier decode's tuning is not this one's
        scale, penalty = args.acoustic_scale, args.word_penalty
        hyps, stats = decode_store(job, [(scale, penalty)], jobs)[(scale, penalty)]
    settings.update(acoustic_scale=scale, word_penalty=penalty, real_time_factor=round(stats.real_time_factor, 5),
                    decode_seconds=round(stats.seconds, 3), failed_utterances=stats.num_failed)
    _write_results(args, hyps, settings, stats)


def _write_results(args, hyps: dict, settings: dict, stats) -> None:
    from asr_kd.decode.scoring import read_text_table, wer, write_wer_dir
    from asr_kd.io import write_json, write_text

    if args.text:
        refs = read_text_table(args.text)
        result = wer(refs, hyps)
        write_wer_dir(args.out_dir, result, refs, hyps, extra=settings)
        print(f"{args.out_dir}: {result} (acoustic scale {settings['acoustic_scale']:g}, word penalty "
              f"{settings['word_penalty']:g}, RTF {stats.real_time_factor:.4f})")
    else:
        write_text(Path(args.out_dir) / "hyp.txt", "".join(f"{u} {' '.join(w)}\n" for u, w in sorted(hyps.items())))
        write_json(Path(args.out_dir) / "decode.json", settings)
        for name in SCORE_FILES:  # scores of an earlier decode would describe other hypotheses
            (Path(args.out_dir) / name).unlink(missing_ok=True)


def _floats(text: str | None) -> list[float]:
    try:
        return [float(x) for x in text.split(",")] if text else []
    except ValueError:
        raise AsrKdError(f"expected comma-separated numbers, got {text!r}") from None


def _score(args) -> None:
    from asr_kd.decode.scoring import read_text_table, wer, write_wer_dir

    refs, hyps = read_text_table(args.ref_text), read_text_table(args.hyp_text)
    result = wer(refs, hyps)
    write_wer_dir(args.out_dir, result, refs, hyps)
    print(result)

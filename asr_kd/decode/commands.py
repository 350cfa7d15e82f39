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
    p.add_argument("--score-map", help="token map applied to reference and hypothesis before scoring (`tok mapped`, "
                                       "`tok` alone = delete; TIMIT: 48 -> 39 phones); wer.json keeps the unmapped score")
    p.add_argument("--acoustic-scale", type=float, default=0.1)
    p.add_argument("--word-penalty", type=float, default=0.0, help="cost added per hypothesised word")
    _add_input_args(p, "dev-", "a dev set to choose the acoustic scale and word penalty on (then fixed for this set)")
    p.add_argument("--dev-text", help="reference text of the dev set")
    p.add_argument("--lm-weights", help="LM weights (1 / acoustic scale) scored on the dev lattices: FIRST:LAST "
                   "(every integer) or comma-separated (default 5:50)")
    p.add_argument("--acoustic-scales",
                   help="the same grid as comma-separated acoustic scales (instead of --lm-weights)")
    p.add_argument("--word-penalties", help="comma-separated word insertion penalties scored on dev (default 0,0.5,1)")
    p.add_argument("--lattice-acoustic-scale", type=float, default=None,
                   help="acoustic scale the dev lattices are decoded with (default: the grid's geometric middle, "
                        "1 / sqrt(lowest * highest LM weight))")
    p.add_argument("--beam", type=float, default=13.0)
    p.add_argument("--lattice-beam", type=float, default=6.0, help="dev lattices keep paths within this of the best")
    p.add_argument("--max-active", type=int, default=7000)
    add_job_args(p)
    p.add_argument("--num-jobs", dest="nj", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old --nj
    add_step_args(p)
    p.set_defaults(func=_decode)

    p = sub.add_parser("fmllr-first-pass", help="speaker-independent decode with a SAT model's si/final.mdl, then "
                                                "per-speaker fMLLR from its best paths -> adapted feature view "
                                                "(Kaldi decode_fmllr.sh's first pass; decode the view to finish)")
    p.add_argument("graph_dir")
    p.add_argument("sat_dir")
    p.add_argument("store", help="the set's feature store (the SAT model's source features, e.g. MFCC)")
    p.add_argument("data_dir", help="data dir with utt2spk")
    p.add_argument("lang_dir")
    p.add_argument("out_dir", help="the adapted view")
    p.add_argument("--acoustic-scale", type=float, default=1 / 12, help="first-pass acoustic scale (Kaldi: 1/12)")
    p.add_argument("--silence-weight", type=float, default=0.01, help="weight of silence frames in the fMLLR stats")
    p.add_argument("--beam", type=float, default=13.0)
    add_job_args(p)
    p.set_defaults(func=_fmllr_first_pass)

    p = sub.add_parser("score", help="WER of a hypothesis text against a reference text")
    p.add_argument("ref_text")
    p.add_argument("hyp_text")
    p.add_argument("out_dir")
    p.add_argument("--score-map", help="token map applied to both texts before scoring (see decode --score-map)")
    p.add_argument("--mode", choices=["strict", "present", "all"], default="strict",
                   help="Kaldi compute-wer's: strict refuses a hypothesis file missing utterances, present scores "
                        "only those present, all counts a missing one as all deletions (default: strict)")
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
    if args.dev_feats or args.dev_loglikes:
        if not args.dev_text:
            raise AsrKdError("--dev-feats/--dev-loglikes need --dev-text to choose the acoustic scale and word penalty")
        _lm_weights(args)  # options checked before anything is claimed or written
    with step_output(args, "out_dir", DECODE_INPUTS) as claim:
        if not claim.done:
            _decode_into(args)


def _decode_into(args) -> None:
    from asr_kd.decode.decoder import decode_store
    from asr_kd.decode.scoring import read_text_table
    from asr_kd.decode.tune import DEFAULT_PENALTIES, tune_and_decode
    from asr_kd.io import write_json
    from asr_kd.parallel import jobs_from_args

    job, jobs = _decode_job(args, dev=False), jobs_from_args(args)
    settings = {"beam": job.beam, "lattice_beam": job.lattice_beam, "max_active": job.max_active,
                "graph_dir": args.graph_dir, "model_dir": args.model_dir}
    if args.dev_feats or args.dev_loglikes:
        penalties = _floats(args.word_penalties) or DEFAULT_PENALTIES
        tuned = tune_and_decode(_decode_job(args, dev=True), read_text_table(args.dev_text), job, _lm_weights(args),
                                penalties, jobs, args.lattice_acoustic_scale)
        hyps, stats, scale, penalty = tuned.hyps, tuned.stats, tuned.acoustic_scale, tuned.word_penalty
        write_json(Path(args.out_dir) / "tuning.json", {
            "chosen_lm_weight": tuned.lm_weight, "chosen_acoustic_scale": scale, "chosen_word_penalty": penalty,
            "on_grid_edge": tuned.edges, "tuned_on": args.dev_text,
            "method": "dev and test lattices rescored (test at the chosen point only)",
            "lattice_acoustic_scale": tuned.lattice_acoustic_scale, "lattice_beam": job.lattice_beam,
            "dev_decode_seconds": round(tuned.dev_stats.seconds, 3),
            "dev": [{"lm_weight": w, "acoustic_scale": 1.0 / w, "word_penalty": p, **r.summary()}
                    for (w, p), r in tuned.dev_wer.items()]})
        for edge in tuned.edges:
            print(f"{args.out_dir}: warning: the dev-best point is on the grid's edge: {edge}")
    else:
        (Path(args.out_dir) / "tuning.json").unlink(missing_ok=True)  # an earlier decode's tuning is not this one's
        scale, penalty = args.acoustic_scale, args.word_penalty
        hyps, stats = decode_store(job, [(scale, penalty)], jobs)[(scale, penalty)]
    settings.update(acoustic_scale=scale, lm_weight=round(1.0 / scale, 6), word_penalty=penalty,
                    real_time_factor=round(stats.real_time_factor, 5),
                    decode_seconds=round(stats.seconds, 3), failed_utterances=stats.num_failed)
    _write_results(args, hyps, settings, stats)


def _write_results(args, hyps: dict, settings: dict, stats) -> None:
    from asr_kd.decode.scoring import read_text_table
    from asr_kd.io import write_json, write_text

    if args.text:
        result = score_texts(read_text_table(args.text), hyps, args.out_dir, args.score_map, settings)
        print(f"{args.out_dir}: {result} (acoustic scale {settings['acoustic_scale']:g}, word penalty "
              f"{settings['word_penalty']:g}, RTF {stats.real_time_factor:.4f})")
    else:
        write_text(Path(args.out_dir) / "hyp.txt", "".join(f"{u} {' '.join(w)}\n" for u, w in sorted(hyps.items())))
        write_json(Path(args.out_dir) / "decode.json", settings)
        for name in SCORE_FILES:  # scores of an earlier decode would describe other hypotheses
            (Path(args.out_dir) / name).unlink(missing_ok=True)


def _lm_weights(args) -> list[float]:
    """The LM-weight grid: --lm-weights FIRST:LAST or a list, or --acoustic-scales inverted, or the default."""
    from asr_kd.decode.tune import DEFAULT_LM_WEIGHTS

    if args.lm_weights and args.acoustic_scales:
        raise AsrKdError("give --lm-weights or --acoustic-scales, not both (LM weight = 1 / acoustic scale)")
    if args.acoustic_scales:
        scales = _floats(args.acoustic_scales)
        if not all(s > 0 for s in scales):
            raise AsrKdError(f"--acoustic-scales must be positive (got {args.acoustic_scales!r})")
        return [1.0 / s for s in scales]
    if args.lm_weights and ":" in args.lm_weights:
        first, last = _floats(args.lm_weights.replace(":", ","))[:2]
        if not 0 < first <= last:
            raise AsrKdError(f"--lm-weights FIRST:LAST needs 0 < FIRST <= LAST (got {args.lm_weights!r})")
        return [first + i for i in range(int(last - first) + 1)]
    return _floats(args.lm_weights) or list(DEFAULT_LM_WEIGHTS)


def _fmllr_first_pass(args) -> None:
    from asr_kd.decode.fmllr import first_pass_adapt
    from asr_kd.parallel import jobs_from_args

    summary = first_pass_adapt(args.graph_dir, args.sat_dir, args.store, args.data_dir, args.lang_dir, args.out_dir,
                               acoustic_scale=args.acoustic_scale, silence_weight=args.silence_weight, beam=args.beam,
                               jobs=jobs_from_args(args))
    print(f"fmllr-first-pass: {args.out_dir}: fMLLR for {summary['speakers']} speakers, auxf improvement "
          f"{summary['impr_per_frame']:.4f} per frame")


def _floats(text: str | None) -> list[float]:
    try:
        return [float(x) for x in text.split(",")] if text else []
    except ValueError:
        raise AsrKdError(f"expected comma-separated numbers, got {text!r}") from None


def _score(args) -> None:
    from asr_kd.decode.scoring import read_text_table

    refs, hyps = read_text_table(args.ref_text), read_text_table(args.hyp_text)
    missing = sorted(set(refs) - set(hyps))
    if missing and args.mode == "strict":
        raise AsrKdError(f"{args.hyp_text}: no hypothesis for {len(missing)} of {len(refs)} reference utterances "
                         f"(e.g. '{missing[0]}'); use --mode present to score only those present, or --mode all to "
                         f"count them as deleted (Kaldi compute-wer's modes)")
    if args.mode == "present":
        refs = {u: words for u, words in refs.items() if u in hyps}
    print(score_texts(refs, hyps, args.out_dir, args.score_map))


def score_texts(refs: dict, hyps: dict, out_dir: str, score_map: str | None = None, extra: dict | None = None):
    """WER into out_dir (hyp/ref/per_utt/wer.json); with a score map, on the mapped tokens, and wer.json's
    `unmapped` holds the score before mapping (TIMIT: PER on 39 phones, 48-phone PER next to it)."""
    from asr_kd.decode.scoring import map_texts, read_token_map, wer, write_wer_dir

    extra = dict(extra or {})
    if score_map:
        mapping = read_token_map(score_map)
        extra.update(score_map=str(score_map), unmapped=wer(refs, hyps).summary())
        refs, hyps = map_texts(refs, mapping, "reference"), map_texts(hyps, mapping, "hypothesis")
    result = wer(refs, hyps)
    write_wer_dir(out_dir, result, refs, hyps, extra=extra)
    return result

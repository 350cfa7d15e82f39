"""Train specialists for a generalist on a corpus, and score generalist + specialists (paper §5, Table 4).

    cfg = load_config(SpecialistConfig, "conf/specialists.yaml")
    train_specialists(cfg, "exp/dnn", train, dev, "exp/specialists")          # resumable
    table = evaluate_specialists("exp/specialists", {"dev": dev, "test": test}, "exp/specialists/specialist_table")

Layout of the exp dir:
- `clusters.json`: every k-means cluster (pdf ids), which clusters got a specialist, the frames of
  the covariance sample, the generalist's checksum and the config: computed once, refused if the
  config or the generalist changed;
- `spec_<m>/`: a trainer exp dir (config.yaml, metrics.jsonl, checkpoints) whose final.pt predicts
  the cluster's pdfs + the dustbin; `specialist.json` (written last: the specialist is done) holds
  its pdfs, the dustbin logit offset and the training sample's sizes and seconds;
- `specialists.json`: all specialists and the total seconds (written when every one is done).

Choices, and why:
- Clusters larger than `max_pdfs` are left to the generalist (a specialist over most pdfs is a
  second generalist), as are clusters with fewer than `min_frames` training frames; the pdfs of
  those clusters are the table's "covered by 0 specialists" row, like the paper's Table 4.
- Targets: hard labels mapped to (cluster pdf, dustbin), as the paper trains its specialists. A
  specialist starts from the generalist (hidden layers copied, output rows of its pdfs copied),
  trains a few epochs and keeps its best dev epoch, which limits the overfitting §6 warns about;
  and the trainer's hard-label path visits exactly the sampled frames (all other labels are -1),
  so no teacher pass and no copy of the features is needed.
- Sampling: all frames of the cluster (at most `max_train_frames / 2`) and as many from the rest.
  The dustbin is then under-represented by the factor r_out / r_in of the two sampling rates, so at
  inference its logit is raised by log(r_in / r_out) (the paper's correction, `dustbin_offset`).
- The dustbin row of the output layer starts as the least-squares linear fit (over the hidden
  activations of sampled frames) of the log-sum-exp of the other pdfs' generalist logits, minus
  that offset: with the offset added back, a fresh specialist predicts what the generalist does.

Sets are resident `FrameData` (AN4 scale: the comparison is frame-level, over whole sets).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr_kd.config import from_dict, to_dict
from asr_kd.distill.specialists import (active_specialists, cluster_matrix, cluster_pdfs, combine, coverage,
                                        dustbin_labels)
from asr_kd.errors import AsrKdError
from asr_kd.expdir import ExpDir
from asr_kd.io import read_json, sha256_file, write_json, write_text
from asr_kd.nnet.ensemble import Ensemble
from asr_kd.nnet.frames import FrameData
from asr_kd.nnet.models import ModelSpec, load_model, save_final
from asr_kd.nnet.train import SingleLearner, TrainConfig, best_member_states, run_training

log = logging.getLogger(__name__)


def _specialist_training() -> TrainConfig:
    return TrainConfig(lr=0.01, max_epochs=3, min_epochs=1)


@dataclass
class SpecialistConfig:
    num_clusters: int = 16  # k of k-means over the pdfs
    overlap: float = 0.1  # a pdf also joins clusters within (1 + overlap) x its own centroid's distance
    max_pdfs: int = 150  # larger clusters get no specialist (left to the generalist)
    min_frames: int = 200  # clusters with fewer training frames get none either
    cluster_frames: int = 30000  # training frames sampled for the covariance of predictions
    kmeans_iters: int = 100
    seed: int = 0  # covariance sample, k-means, each specialist's frame sample
    max_train_frames: int = 40000  # per specialist: half from its cluster, half from the rest
    top_n: int = 1  # a specialist is active where its cluster holds one of the generalist's top-n pdfs
    combine_iters: int = 50  # EM steps of the combination (stops earlier at convergence)
    train: TrainConfig = field(default_factory=_specialist_training)  # model/context come from the generalist


@dataclass
class Specialist:
    model: torch.nn.Module
    pdfs: list[int]
    dustbin_offset: float


# ---------------------------------------------------------------- clustering ----------------
EVAL_ONLY = ("top_n", "combine_iters")  # config keys that do not change what is trained


def trained_identity(config: dict) -> dict:
    """The part of a config dict that decides the specialists (not evaluation keys nor the device)."""
    kept = {k: v for k, v in config.items() if k not in EVAL_ONLY}
    return {**kept, "train": {k: v for k, v in config["train"].items() if k != "device"}}


def make_clusters(cfg: SpecialistConfig, generalist: Ensemble, train: FrameData, exp_dir: Path,
                  predictor: Ensemble | None = None) -> dict:
    """clusters.json: computed once from `cfg`, reused while what decides the specialists is unchanged.

    `predictor`: whose predictions are clustered (e.g. the ensemble, arithmetic mean); default the generalist.
    """
    t0 = time.time()
    predictor = predictor or generalist
    sha = [sha256_file(s) for s in generalist.sources]
    predictor_sha = sorted(sha256_file(s) for s in predictor.sources)
    path = exp_dir / "clusters.json"
    if path.is_file():
        record = read_json(path)
        if (trained_identity(record["config"]) != trained_identity(to_dict(cfg)) or record["generalist_sha256"] != sha
                or record.get("clustered_with_sha256", sha) != predictor_sha):
            raise AsrKdError(f"{path}: made with another config, generalist or clustering model; use a new exp dir "
                             "or delete it")
        return record
    labelled = train.labelled_frames().cpu().numpy()
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(labelled, size=min(cfg.cluster_frames, len(labelled)), replace=False))
    if predictor.num_pdfs != generalist.num_pdfs:
        raise AsrKdError(f"{[str(p) for p in predictor.sources]}: {predictor.num_pdfs} pdfs, the generalist "
                         f"{generalist.num_pdfs}")
    probs = predictor.posteriors(train, torch.from_numpy(sample).to(train.device)).cpu().numpy()
    clusters = cluster_pdfs(probs, cfg.num_clusters, cfg.seed, cfg.overlap, cfg.kmeans_iters)
    frames = np.bincount(train.labels[train.labels >= 0].cpu().numpy(), minlength=generalist.num_pdfs)
    cluster_frames = [int(frames[c].sum()) for c in clusters]
    chosen = [m for m, c in enumerate(clusters) if len(c) <= cfg.max_pdfs and cluster_frames[m] >= cfg.min_frames]
    if not chosen:
        raise AsrKdError(f"{train.name}: no cluster has <= {cfg.max_pdfs} pdfs and >= {cfg.min_frames} frames; "
                         "raise num_clusters or max_pdfs")
    record = {"config": to_dict(cfg), "generalist_sha256": sha, "num_pdfs": generalist.num_pdfs,
              "clustered_with": [str(p) for p in predictor.sources], "clustered_with_sha256": predictor_sha,
              "covariance_frames": len(sample), "clusters": clusters, "cluster_train_frames": cluster_frames,
              "specialists": chosen,
              "within_cluster_errors": within_cluster_errors(probs, train.labels.cpu().numpy()[sample], clusters),
              "seconds": round(time.time() - t0, 1)}
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    log.info("%d clusters of sizes %s; specialists for %s", len(clusters), [len(c) for c in clusters], chosen)
    return record


def within_cluster_errors(probs: np.ndarray, labels: np.ndarray, clusters: list[list[int]]) -> float:
    """Fraction of the generalist's frame errors whose predicted and correct pdf share a cluster."""
    pred = probs.argmax(1)
    wrong = pred != labels
    if not wrong.any():
        return 0.0
    member = cluster_matrix(clusters, probs.shape[1]).T.bool().numpy()  # (C, M)
    return round(float((member[pred[wrong]] & member[labels[wrong]]).any(1).mean()), 4)


# ---------------------------------------------------------------- one specialist ------------
def sample_frames(labels: torch.Tensor, pdfs: list[int], max_frames: int, seed: int, *,
                  name: str = "train", dev: bool = False) -> tuple[torch.Tensor, float]:
    """(frame ids, dustbin offset): the cluster's frames (<= max_frames / 2) and as many of the rest.

    The offset log(r_in / r_out) of the two sampling rates undoes the dustbin's under-sampling.
    A `dev` set with none of the cluster's pdfs (a small dev set can lack a rare pdf) gets
    max_frames / 2 frames of the rest and offset 0; a training set needs both kinds.
    """
    labels = labels.cpu()
    inside = torch.isin(labels, torch.as_tensor(pdfs))
    in_ids = torch.nonzero(inside).squeeze(1).numpy()
    out_ids = torch.nonzero(~inside & (labels >= 0)).squeeze(1).numpy()
    rng = np.random.default_rng(seed)
    n_in = min(len(in_ids), max_frames // 2)
    n_out = min(len(out_ids), n_in if n_in or not dev else max_frames // 2)
    if (n_in == 0 and not dev) or n_out == 0:
        raise AsrKdError(f"{name}: the specialist for pdfs {pdfs[:5]}... has {len(in_ids)} frames inside and "
                         f"{len(out_ids)} outside its cluster; it needs both (raise min_frames)")
    if n_in == 0:
        log.warning("%s: no frame of the specialist's pdfs %s...; its dev accuracy sees the dustbin only",
                    name, pdfs[:5])
    chosen = np.concatenate([rng.choice(in_ids, n_in, replace=False), rng.choice(out_ids, n_out, replace=False)])
    offset = math.log((n_in / len(in_ids)) / (n_out / len(out_ids))) if n_in else 0.0
    return torch.from_numpy(np.sort(chosen)), offset


def specialist_set(data: FrameData, pdfs: list[int], frames: torch.Tensor, name: str) -> FrameData:
    """`data`'s features (shared, not copied) labelled with specialist classes on `frames` only."""
    labels = torch.full_like(data.labels, -1)
    ids = frames.to(data.device)
    labels[ids] = dustbin_labels(data.labels[ids], pdfs, data.num_pdfs)
    return FrameData(data.feats, data.offsets, data.utt_ids, labels, len(pdfs) + 1, None, name=name)


def output_layer(model: torch.nn.Module, num_pdfs: int) -> str:
    """Qualified name of the last Linear layer (the pdf logits)."""
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_pdfs]
    if not names:
        raise AsrKdError(f"no output Linear layer with {num_pdfs} outputs in {type(model).__name__}")
    return names[-1]


@torch.no_grad()
def init_from_generalist(model: torch.nn.Module, spec: ModelSpec, pdfs: list[int], windows: torch.Tensor,
                         dustbin_offset: float) -> tuple[torch.nn.Module, ModelSpec]:
    """A specialist over `pdfs` + dustbin with the generalist's weights (module docstring: the dustbin row)."""
    name = output_layer(model, spec.num_pdfs)
    layer = model.get_submodule(name)
    hidden = []
    hook = layer.register_forward_hook(lambda mod, inp, out: hidden.append(inp[0]))
    logits = model(windows)
    hook.remove()
    h = torch.cat([hidden[0].double(), torch.ones(len(windows), 1, dtype=torch.float64, device=windows.device)], 1)
    others = torch.ones(spec.num_pdfs, dtype=torch.bool, device=windows.device)
    others[pdfs] = False
    target = torch.logsumexp(logits.double()[:, others], 1, keepdim=True)
    ridge = 1e-3 * torch.eye(h.shape[1], dtype=torch.float64, device=h.device)
    row = torch.linalg.solve(h.T @ h + ridge, h.T @ target).squeeze(1)  # least squares (ridge for stability)
    state = model.state_dict()
    state[f"{name}.weight"] = torch.cat([layer.weight[pdfs], row[None, :-1].float()])
    state[f"{name}.bias"] = torch.cat([layer.bias[pdfs], (row[-1:] - dustbin_offset).float()])
    new_spec = dataclasses.replace(spec, num_pdfs=len(pdfs) + 1)
    specialist = new_spec.build().to(windows.device)
    specialist.load_state_dict(state)
    return specialist, new_spec


def train_one(cfg: SpecialistConfig, m: int, pdfs: list[int], generalist: tuple[torch.nn.Module, ModelSpec],
              train: FrameData, dev: FrameData, out: Path) -> dict:
    """Train specialist `m` into `out` (resuming); returns its specialist.json record."""
    t0 = time.time()
    model, spec = generalist
    frames, offset = sample_frames(train.labels, pdfs, cfg.max_train_frames, cfg.seed + 1 + m, name=str(train.name))
    dev_frames, _ = sample_frames(dev.labels, pdfs, cfg.max_train_frames, cfg.seed + 1 + m, name=str(dev.name),
                                  dev=True)
    first = frames[:4096].to(train.device)
    specialist, s_spec = init_from_generalist(model, spec, pdfs,
                                              train.windows(first, spec.left_context, spec.right_context), offset)
    tcfg = dataclasses.replace(cfg.train, model=spec.model, left_context=spec.left_context,
                               right_context=spec.right_context, input_norm=spec.input_norm)
    learner = SingleLearner(specialist.to(train.device))
    result = run_training(learner, tcfg, specialist_set(train, pdfs, frames, f"{train.name}[specialist {m}]"),
                          specialist_set(dev, pdfs, dev_frames, f"{dev.name}[specialist {m}]"), ExpDir(out),
                          s_spec, [tcfg.seed])
    save_final(out / "final.pt", best_member_states(result, learner)[0], s_spec)
    record = {"cluster": m, "pdfs": pdfs, "dustbin_offset": offset, "train_frames": len(frames),
              "dev_frames": len(dev_frames), "best_epoch": result.best_epoch,
              "dev_frame_acc": result.dev_frame_acc[0], "seconds": round(time.time() - t0, 1)}
    write_json(out / "specialist.json", record)
    return record


def train_specialists(cfg: SpecialistConfig, generalist_dir: str | Path, train: FrameData, dev: FrameData,
                      exp_dir: str | Path, cluster_with: list[str | Path] | None = None) -> list[Path]:
    """Cluster, then train every chosen cluster's specialist into exp_dir/spec_<m> (finished ones are kept).

    `cluster_with`: model/ensemble dirs whose (arithmetic-mean) predictions are clustered instead of
    the generalist's (the paper: "the generalist's or the ensemble's").
    """
    exp_dir = Path(exp_dir)
    t0 = time.time()
    generalist = Ensemble.load(generalist_dir, train.device)
    if len(generalist) != 1:
        raise AsrKdError(f"{generalist_dir}: the generalist must be one model, got {len(generalist)} members")
    if train.num_pdfs != generalist.num_pdfs:
        raise AsrKdError(f"{train.name}: {train.num_pdfs} pdfs in the alignment, {generalist.num_pdfs} in "
                         f"the generalist {generalist_dir}: made with another tree?")
    predictor = Ensemble.load(list(cluster_with), train.device) if cluster_with else None
    record = make_clusters(cfg, generalist, train, exp_dir, predictor)
    dirs, seconds = [], {}
    for m in record["specialists"]:
        out = exp_dir / f"spec_{m:02d}"
        if not (out / "specialist.json").is_file():
            log.info("specialist %d: %d pdfs", m, len(record["clusters"][m]))
            train_one(cfg, m, record["clusters"][m], generalist.members[0], train, dev, out)
        seconds[out.name] = read_json(out / "specialist.json")["seconds"]
        dirs.append(out)
    write_json(exp_dir / "specialists.json", {"generalist": str(generalist.sources[0]),
                                              "specialists": [d.name for d in dirs], "train_seconds": seconds,
                                              "seconds_this_call": round(time.time() - t0, 1)})
    return dirs


# ---------------------------------------------------------------- evaluation ----------------
def read_config(exp_dir: str | Path) -> SpecialistConfig:
    """The config a train-specialists exp dir was made with (from its clusters.json)."""
    path = Path(exp_dir) / "clusters.json"
    if not path.is_file():
        raise AsrKdError(f"{path}: missing; run train-specialists first")
    return from_dict(SpecialistConfig, read_json(path)["config"], str(path))


def load_specialists(exp_dir: str | Path,
                     device: str | torch.device = "cpu") -> tuple[Ensemble, list[Specialist], dict]:
    """(generalist, specialists, clusters.json) of a finished train-specialists exp dir."""
    exp_dir = Path(exp_dir)
    if not (exp_dir / "specialists.json").is_file():
        raise AsrKdError(f"{exp_dir}/specialists.json: missing; run train-specialists to the end first")
    index = read_json(exp_dir / "specialists.json")
    clusters = read_json(exp_dir / "clusters.json")
    generalist = Ensemble.load(index["generalist"], device)
    if [sha256_file(s) for s in generalist.sources] != clusters["generalist_sha256"]:
        raise AsrKdError(f"{index['generalist']}: changed since the specialists in {exp_dir} were trained")
    specialists = []
    for name in index["specialists"]:
        meta = read_json(exp_dir / name / "specialist.json")
        specialists.append(Specialist(load_model(exp_dir / name, device)[0], meta["pdfs"], meta["dustbin_offset"]))
    return generalist, specialists, clusters


@torch.no_grad()
def combined_posteriors(generalist: Ensemble, specialists: list[Specialist], data: FrameData, frames: torch.Tensor,
                        top_n: int = 1, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(generalist p_g, combined q, active (B, M)) for `frames` of `data`."""
    spec = generalist.members[0][1]
    p_g = generalist.posteriors(data, frames).double()
    x = data.windows(frames, spec.left_context, spec.right_context)
    clusters = [s.pdfs for s in specialists]
    active = active_specialists(p_g, cluster_matrix(clusters, p_g.shape[1], p_g.device), top_n)
    probs = []
    for s in specialists:
        logits = s.model(x).double()
        logits[:, -1] += s.dustbin_offset
        probs.append(torch.softmax(logits, 1))
    return p_g, combine(p_g, probs, clusters, active, iters), active


def evaluate_specialists(exp_dir: str | Path, sets: dict[str, FrameData], out_stem: str | Path, top_n: int = 1,
                         iters: int = 50, batch: int = 8192, device: str | torch.device = "cpu") -> dict:
    """Frame accuracy of generalist vs generalist + specialists per set, and the Table 4 breakdown;
    writes OUT_STEM.json and OUT_STEM.md and returns the json record."""
    t0 = time.time()
    generalist, specialists, clusters = load_specialists(exp_dir, device)
    cover = torch.from_numpy(coverage([s.pdfs for s in specialists], clusters["num_pdfs"]))
    results = {}
    for name, data in sets.items():
        labelled = data.labelled_frames()
        g_ok, c_ok, n_active = [], [], 0
        for i in range(0, len(labelled), batch):
            frames = labelled[i:i + batch]
            p_g, q, active = combined_posteriors(generalist, specialists, data, frames, top_n, iters)
            y = data.labels_of(frames)
            g_ok.append(p_g.argmax(1) == y)
            c_ok.append(q.argmax(1) == y)
            n_active += int(active.any(1).sum())
        g_ok, c_ok = torch.cat(g_ok).cpu(), torch.cat(c_ok).cpu()
        results[name] = set_breakdown(g_ok, c_ok, cover[data.labels_of(labelled).cpu()], n_active)
    record = {"exp_dir": str(exp_dir), "num_specialists": len(specialists), "top_n": top_n,
              "specialist_pdfs": [len(s.pdfs) for s in specialists],
              "covered_pdfs": int((cover > 0).sum()), "num_pdfs": clusters["num_pdfs"],
              "train_seconds": read_json(Path(exp_dir) / "specialists.json")["train_seconds"],
              "cluster_seconds": clusters.get("seconds"),
              "eval_seconds": round(time.time() - t0, 1), "sets": results,
              "config": clusters["config"]}
    write_json(Path(f"{out_stem}.json"), record)
    write_text(Path(f"{out_stem}.md"), specialist_markdown(record))
    return record


@torch.no_grad()
def write_combined_loglikes(exp_dir: str | Path, data: FrameData, out: str | Path, priors: np.ndarray, *,
                            top_n: int = 1, iters: int = 50, batch: int = 8192,
                            device: str | torch.device = "cpu") -> Path:
    """Per-utterance log q - log prior of every frame of `data` (a store for `asr-kd decode --loglikes`),
    with the same prior floor as the nnet stage's `compute-loglikes`."""
    from asr_kd.data.store import RaggedStoreWriter
    from asr_kd.nnet.infer import log_priors, utterance_chunks

    generalist, specialists, _ = load_specialists(exp_dir, device)
    shift = log_priors(priors, generalist.num_pdfs).to(data.device).double()
    offsets = data.offsets.tolist()
    meta = {"kind": "loglike", "num_pdfs": generalist.num_pdfs, "features": str(data.name),
            "specialists": str(exp_dir), "top_n": top_n, "model_sha256": [sha256_file(s) for s in generalist.sources]}
    with RaggedStoreWriter(out, "float32") as writer:
        for first, end, frames in utterance_chunks(offsets, 0, len(data.utt_ids), batch, data.device):
            _, q, _ = combined_posteriors(generalist, specialists, data, frames, top_n, iters)
            rows = (q.clamp_min(1e-30).log() - shift).float().cpu().numpy()
            for u in range(first, end):
                writer.add(data.utt_ids[u], rows[offsets[u] - offsets[first]:offsets[u + 1] - offsets[first]])
        writer.close(meta)
    return Path(out)


def set_breakdown(g_ok: torch.Tensor, c_ok: torch.Tensor, cover: torch.Tensor, n_active: int) -> dict:
    """Overall and per "# specialists covering the correct pdf" counts (the paper's Table 4 rows)."""
    def row(mask):
        n, g, c = int(mask.sum()), int(g_ok[mask].sum()), int(c_ok[mask].sum())
        return {"frames": n, "generalist_correct": g, "combined_correct": c, "delta_correct": c - g,
                "relative_change": (c - g) / g if g else None}

    by_cover = {str(k): row(cover == k) for k in sorted(set(cover.tolist()))}
    return {"overall": row(torch.ones_like(g_ok)), "covered": row(cover > 0), "by_covering": by_cover,
            "frames_with_active_specialist": n_active}


def specialist_markdown(record: dict) -> str:
    """The table: per set, rows = # specialists covering the correct pdf, then covered and overall."""
    cfg, train = record["config"], record["config"]["train"]
    seconds = sum(record["train_seconds"].values())
    lines = [f"{record['num_specialists']} specialists (k-means k = {cfg['num_clusters']}, overlap "
             f"{cfg['overlap']}, sizes {record['specialist_pdfs']} pdfs + dustbin; {record['covered_pdfs']} of "
             f"{record['num_pdfs']} pdfs covered), each trained from the generalist on <= {cfg['max_train_frames']} "
             f"frames for <= {train['max_epochs']} epochs (lr {train['lr']}); active where the generalist's top-"
             f"{record['top_n']} pdf is in the cluster. Clustering {_seconds(record.get('cluster_seconds'))}, "
             f"training {seconds:.0f} s in all, evaluation {record['eval_seconds']:.0f} s.\n"]
    for name, res in record["sets"].items():
        lines += [f"**{name}** ({res['frames_with_active_specialist']} of {res['overall']['frames']} frames have an "
                  "active specialist)\n",
                  "| # specialists covering | # frames | generalist acc % | + specialists acc % | delta correct | "
                  "relative accuracy change |", "|---|---|---|---|---|---|"]
        rows = [(k, r) for k, r in res["by_covering"].items()] + [("covered (>= 1)", res["covered"]),
                                                                    ("all frames", res["overall"])]
        for label, r in rows:
            lines.append(f"| {label} | {r['frames']} | {_pct(r['generalist_correct'], r['frames'])} | "
                         f"{_pct(r['combined_correct'], r['frames'])} | {r['delta_correct']:+d} | "
                         f"{_rel(r['relative_change'])} |")
        lines.append("")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.0f} s"


def _pct(num: int, den: int) -> str:
    return f"{100 * num / den:.2f}" if den else ""


def _rel(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}%"

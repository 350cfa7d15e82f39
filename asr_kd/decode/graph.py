"""make_graph: lang_test dir (L_disambig.fst, G.fst) + acoustic model (tree, final.mdl) -> HCLG.fst.

The graph dir holds HCLG.fst, words.txt, phones.txt, phones/disambig.int and meta.json naming the
model (sha256 of `tree` and `final.mdl`), so a decoder refuses a graph built for another model.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)


def make_graph(lang_dir: str | os.PathLike, model_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
               self_loop_scale: float = 0.1, transition_scale: float = 1.0) -> Path:
    """Build HCLG.fst for the model in `model_dir` (tree, final.mdl) and the grammar in `lang_dir`."""
    from asr_kd.kaldi.fst import compile_hclg, read_fst, write_fst
    from asr_kd.kaldi.gmm import read_model, read_tree

    lang_dir, model_dir = Path(lang_dir), Path(model_dir)
    for path in (lang_dir / "L_disambig.fst", lang_dir / "G.fst", lang_dir / "phones/disambig.int",
                 model_dir / "tree", model_dir / "final.mdl"):
        if not path.is_file():
            raise AsrKdError(f"{path}: missing (make_graph needs a lang_test dir and a model dir)")
    start = time.time()
    tree = read_tree(model_dir / "tree")
    tm, _ = read_model(model_dir / "final.mdl", tree)
    _check_phones(lang_dir, tm)
    disambig = [int(x) for x in (lang_dir / "phones/disambig.int").read_text().split()]
    hclg = compile_hclg(read_fst(lang_dir / "L_disambig.fst"), read_fst(lang_dir / "G.fst"), tree, tm, disambig,
                        transition_scale=transition_scale, self_loop_scale=self_loop_scale)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        write_fst(hclg, tmp / "HCLG.fst")
        for name in ("words.txt", "phones.txt"):
            shutil.copy(lang_dir / name, tmp / name)
        (tmp / "phones").mkdir()
        shutil.copy(lang_dir / "phones/disambig.int", tmp / "phones/disambig.int")
        write_json(tmp / "meta.json", {
            "lang_dir": str(lang_dir), "model_dir": str(model_dir), "context_width": tree.context_width,
            "tree_sha256": sha256_file(model_dir / "tree"), "model_sha256": sha256_file(model_dir / "final.mdl"),
            "self_loop_scale": self_loop_scale, "transition_scale": transition_scale,
            "num_states": hclg.num_states})
    log.info("%s: HCLG with %d states in %.1f s", out_dir, hclg.num_states, time.time() - start)
    return Path(out_dir)


def _check_phones(lang_dir: Path, tm) -> None:
    """The model's phones must all be real phones of this lang dir (same phones.txt it was trained on)."""
    from asr_kd.lang.prepare_lang import read_symbol_table

    phones = read_symbol_table(lang_dir / "phones.txt")
    known = {i for p, i in phones.items() if p != "<eps>" and not p.startswith("#")}
    unknown = sorted(set(tm.phones) - known)
    if unknown:
        raise AsrKdError(f"{lang_dir}/phones.txt: model phones {unknown[:10]} are not in it; "
                         "the model was trained with another lang dir")

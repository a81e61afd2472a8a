"""How sharp a drafter's tree scores should be: ``tree_logit_scale`` alpha, measured on text it never trained on.

EAGLE-2 ranks tree nodes by the drafter's cumulative probability, taking exp(score) for the chance that the target
accepts the node's path. Under greedy verification a child is accepted when it is the target's argmax, so a node
score is calibrated when

    P(child i is the target's argmax) = softmax(alpha * z)_i        z: the drafter's logits [V] at the parent

A drafter trained by forward KL matches the target's distribution, not its argmax, and is underconfident in its first
choice (measured: the shipped drafter's first choice is the target's argmax 80% of the time where it gives it 63%).
``fit_logit_scale`` finds alpha by the binary log-loss of "child i is the argmax" over each row's top-k children
(the nodes a tree drafts), on the drafter's own unrolled outputs (the TTT steps: the rows chain and tree drafting
see), golden-section search in log alpha. ``generation_slimspec.tree_logit_scale`` reads the result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

ALPHA_RANGE = (0.25, 8.0)


def logit_scale_loss(logits: torch.Tensor, best: torch.Tensor, alpha: float, top_k: int = 4) -> float:
    """Mean binary log-loss of "child i is the target's argmax" over the top_k children of each row, with
    P(i) = softmax(alpha * logits)_i. logits [N, V] (a row per drafting position), best [N] (the target's argmax)."""
    total = 0.0
    for start in range(0, len(logits), 256):  # rows in chunks: no second [N, V] tensor
        z, y = logits[start : start + 256].float(), best[start : start + 256]
        top, ids = z.topk(top_k, dim=-1)
        hit = (ids == y[:, None]).float()
        p = (alpha * top - torch.logsumexp(alpha * z, dim=-1, keepdim=True)).exp().clamp(1e-6, 1 - 1e-6)
        total += float(-(hit * p.log() + (1 - hit) * (1 - p).log()).sum())
    return total / (len(logits) * top_k)


def fit_logit_scale(logits: torch.Tensor, best: torch.Tensor, top_k: int = 4, iterations: int = 24) -> float:
    """The alpha in ``ALPHA_RANGE`` with the least ``logit_scale_loss`` (golden-section search in log alpha; the
    loss is unimodal in alpha for a fixed set of rows)."""
    lo, hi = (math.log(a) for a in ALPHA_RANGE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = (logit_scale_loss(logits, best, math.exp(x), top_k) for x in (a, b))
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = logit_scale_loss(logits, best, math.exp(a), top_k)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = logit_scale_loss(logits, best, math.exp(b), top_k)
    return math.exp((lo + hi) / 2)


@torch.no_grad()
def drafting_rows(drafter, data, *, rows: int = 2048, ttt_steps: int = 3, seed: int = 0,
                  progress: bool = True) -> tuple:
    """The drafter's logits at up to ``rows`` response positions of ``data`` (a DistillationData), over its first
    ``ttt_steps`` drafting steps (unrolled on its own outputs), and the target's argmax there -> (logits [N, V]
    fp32, best [N])."""
    from tqdm.auto import tqdm

    from .ttt import ttt_unroll

    bar = tqdm(total=rows, desc="drafting rows", unit="row", disable=not progress)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    logits, best, count = [], [], 0
    for i in order:
        item = data[i]
        feats = item["feats"][None].to(drafter.dtype)
        for j, g in enumerate(ttt_unroll(drafter, item["tokens"][None], feats, ttt_steps)):
            valid = item["loss_mask"].clone()
            valid[:j] = False  # no chain of j steps ends before position j
            if valid.any():
                logits.append(drafter.head(g[0, valid]).float())
                best.append(item["target_ids"][valid, 0])
                count += int(valid.sum())
                bar.update(min(int(valid.sum()), max(0, rows - bar.n)))
        if count >= rows:
            break
    bar.close()
    if not logits:
        raise ValueError("the data has no response positions to measure the drafter's scores on")
    return torch.cat(logits)[:rows], torch.cat(best)[:rows]


def trained_data(folder: Path, target_name: str) -> str:
    """Every data path a drafter folder says it trained on (its training.json and evaluation.json, all stages; the
    data folders of a reference recipe for ``target_name``)."""
    text = []
    for name in ("training.json", "evaluation.json"):
        path = Path(folder) / name
        if path.exists():
            info = json.loads(path.read_text())
            text.append(str(info.get("data", "")))
            text += [str(stage.get("data", "")) for stage in info.get("stages", []) if isinstance(stage, dict)]
            recipe = info.get("recipe") or {}
            if recipe.get("prompts"):  # a reference build: the data folders its recipe names
                from .recipe import Recipe, data_folders

                fields = {k: v for k, v in recipe.items() if k in Recipe.__dataclass_fields__}
                text += [str(f) for f in data_folders(target_name, Recipe(**fields))]
    return "\n".join(text)


def measure_tree_scale(drafter_folder: str, data: str, *, target: str = "gemma3-270m", rows: int = 2048,
                       top_k: int = 4, write: bool = False, progress: bool = True) -> dict:
    """Fit ``tree_logit_scale`` for a drafter on self-distillation data it never trained on; with ``write``, store
    it in the folder's generation_config.json. ValueError if the drafter says it trained on any of the folders."""
    from transformers import AutoModel, GenerationConfig

    from slimspec.targets import load_target

    from .data import DistillationData

    folders = [f for f in data.split(",") if f]
    seen = trained_data(Path(drafter_folder), target)
    overlap = [f for f in folders if str(Path(f).resolve()) in seen or f in seen]
    if overlap:
        raise ValueError(f"{drafter_folder} trained on {overlap}: its scores are sharper there than on new text. "
                         f"Measure on data it never saw (slimspec-train data --prompts varied-rest --no-sampled "
                         f"--out NEW, or --prompts FILE).")
    drafter = AutoModel.from_pretrained(drafter_folder, trust_remote_code=True).float().eval()
    target_model, _ = load_target(target, dtype=torch.float32)
    drafter.use_target_embeddings(target_model.get_input_embeddings())
    logits, best = drafting_rows(drafter, DistillationData(",".join(folders), window=256), rows=rows,
                                 progress=progress)
    alpha = fit_logit_scale(logits, best, top_k)
    hits = (logits.topk(top_k, dim=-1).indices == best[:, None]).float().mean(0)
    result = dict(tree_logit_scale=round(alpha, 3), rows=len(best), top_k=top_k, data=folders,
                  hit_rate=[round(float(h), 4) for h in hits],
                  mean_q=[round(float(q), 4) for q in torch.softmax(logits, -1).topk(top_k, -1).values.mean(0)],
                  loss_at_1=logit_scale_loss(logits, best, 1.0, top_k),
                  loss=logit_scale_loss(logits, best, alpha, top_k))
    if write:
        config = GenerationConfig.from_pretrained(drafter_folder)
        config.tree_logit_scale = result["tree_logit_scale"]
        config.save_pretrained(drafter_folder)
    return result

"""Self-distillation data (``slimspec-train data``): the target writes its own responses, and the records keep
what EAGLE-3 training needs from it.

Layout of a DATA folder (resumable: each shard is written to a temporary folder and renamed when complete;
``meta.json`` lists finished shards, and a rerun skips them):

    meta.json                       target, layer ids, sizes, shards, generation settings, tokens/s
    shard_00000/tokens.npy          int32 [N]        all sequences concatenated (prompt + response)
    shard_00000/mask.npy            uint8 [N]        1 on response tokens (the loss mask)
    shard_00000/feats.npy           bf16 as int16 [N, 3 d_t]   target hidden_states at the drafter's layer ids
    shard_00000/topk_ids.npy        int32 [N, k]     the target's k most likely next tokens at each position
    shard_00000/topk_logp.npy       fp16 [N, k]      their log-probabilities (log_softmax over the full vocabulary)
    shard_00000/offsets.npy         int64 [S + 1]    sequence boundaries

Arrays are plain .npy files read back memory-mapped. The full target distribution (262k floats per token) is
not stored: its top k (default 64) come free from the forward pass that records the hidden states, and training
renormalizes them. ``meta.json`` reports the mean probability mass they hold (``topk_mass``); training with
them skips a 262k-wide target head per position (the slowest part of a training step before).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def load_prompt_file(path: str) -> list:
    """jsonl (a "prompt", "text" or "instruction" field per line) or txt (prompts separated by blank lines)."""
    text = Path(path).read_text()
    if str(path).endswith((".jsonl", ".json")):
        out = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            record = json.loads(line)
            value = next((record[k] for k in ("prompt", "text", "instruction") if k in record), None)
            if value is None:
                raise ValueError(f"{path}:{i + 1} has none of the fields prompt, text, instruction")
            out.append(value)
        return out
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def _to_int16(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy()


def from_int16(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True)).view(torch.bfloat16)


@torch.no_grad()
def _records(target, tokenizer, prompts, layer_ids, max_new_tokens, max_prompt_tokens, do_sample, seed, topk):
    """Generate responses for a batch of prompts and run one full forward over each prompt + response."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_tokens)
    enc = enc.to(target.device)
    torch.manual_seed(seed)
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if do_sample else dict(do_sample=False)
    seqs = target.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **kw)
    attn = torch.cat([enc["attention_mask"], torch.ones_like(seqs[:, enc["input_ids"].shape[1]:])], dim=1)
    positions = (attn.cumsum(-1) - 1).clamp_min(0)
    out = target(input_ids=seqs, attention_mask=attn, position_ids=positions, output_hidden_states=True)
    hs = out.hidden_states
    P = enc["input_ids"].shape[1]
    eos = tokenizer.eos_token_id
    for b in range(seqs.shape[0]):
        start = int((attn[b] == 0).sum())  # left padding
        end = seqs.shape[1]
        gen = seqs[b, P:]
        if eos is not None and (gen == eos).any():  # keep the response up to and including its first eos
            end = P + int((gen == eos).nonzero()[0]) + 1
        tokens = seqs[b, start:end]
        mask = torch.zeros(end - start, dtype=torch.uint8)
        mask[P - start :] = 1
        feats = torch.cat([hs[i][b, start:end] for i in layer_ids], dim=-1)
        ids, logp = top_logprobs(out.logits[b, start:end], topk)
        yield tokens.cpu(), mask, feats.cpu(), ids.cpu(), logp.cpu()


def top_logprobs(logits: torch.Tensor, k: int) -> tuple:
    """The k most likely tokens and their log-probabilities, [T, V] logits -> ids [T, k], logp [T, k] fp32:
    log_softmax(x)_i = x_i - logsumexp(x), so the top k are taken on the raw logits (no [T, V] fp32 copy)."""
    values, ids = logits.topk(min(k, logits.shape[-1]), dim=-1)
    return ids, values.float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True)


@torch.no_grad()
def _text_records(target, tokenizer, text, layer_ids, window, topk, batch_size=1):
    """Teacher-forced records of one text: one target forward over each window of it (no generation). Every position
    is trained on the target's own next-token distribution there, which is exact whoever wrote the text. Full
    windows run ``batch_size`` at a time (no padding: every row is the same forward as alone); the short tail alone."""
    bos = tokenizer.bos_token_id
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = window - (bos is not None)
    pieces = [([bos] if bos is not None else []) + ids[start : start + step]
              for start in range(0, max(len(ids) - 1, 0), step)]
    pieces = [p for p in pieces if len(p) - (bos is not None) >= 8]
    full = [p for p in pieces if len(p) == len(pieces[0])] if pieces else []
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)] + [[p] for p in pieces[len(full):]]
    for group in groups:
        tokens = torch.tensor(group, device=target.device)
        out = target(input_ids=tokens, output_hidden_states=True)
        for b in range(len(group)):
            feats = torch.cat([out.hidden_states[i][b] for i in layer_ids], dim=-1)
            top_ids, logp = top_logprobs(out.logits[b], topk)
            mask = torch.ones(tokens.shape[1], dtype=torch.uint8)
            mask[0] = 0
            yield tokens[b].cpu(), mask, feats.cpu(), top_ids.cpu(), logp.cpu()


def write_shard(folder: Path, records) -> int:
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        tokens, masks, feats, ids, logps, offsets = [], [], [], [], [], [0]
        for t, m, f, i, lp in records:
            tokens.append(t.to(torch.int32).numpy()), masks.append(m.numpy()), feats.append(_to_int16(f))
            ids.append(i.to(torch.int32).numpy()), logps.append(lp.to(torch.float16).numpy())
            offsets.append(offsets[-1] + len(t))
        for name, arrays in (("tokens", tokens), ("mask", masks), ("feats", feats), ("topk_ids", ids),
                             ("topk_logp", logps)):
            np.save(tmp / f"{name}.npy", np.concatenate(arrays))
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return offsets[-1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generate_data(*, target, tokenizer, prompts: list, out: str, layer_ids: list, max_new_tokens: int = 128,
                  max_prompt_tokens: int = 512, batch_size: int = 8, shard_prompts: int = 64, sampled: bool = True,
                  modes: list | None = None, seed: int = 0, topk: int = 64, target_name: str = "",
                  progress: bool = True) -> dict:
    """Write (or resume) a DATA folder; each prompt gets a greedy response and, with ``sampled``, a sampled one
    (T = 1). ``modes`` (do_sample per response, e.g. [True]: sampled only) overrides ``sampled``."""
    modes = list(modes) if modes is not None else [False, True] if sampled else [False]
    if not modes or not all(isinstance(m, bool) for m in modes):
        raise ValueError(f"modes {modes!r}: a list of do_sample flags, e.g. [False], [False, True] or [True]")
    settings = dict(max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
                    sampled=True in modes, seed=seed, prompts=len(prompts), shard_prompts=shard_prompts)
    if modes != [False, True][: len(modes)]:  # folders of the two older modes keep their settings (and meta.json)
        settings["modes"] = modes

    def shard_records(index, chunk, bar):
        records = []
        for mode in modes:
            for b in range(0, len(chunk), batch_size):
                batch = chunk[b : b + batch_size]
                records += list(_records(target, tokenizer, batch, layer_ids, max_new_tokens, max_prompt_tokens,
                                         mode, seed + 1000 * index + b, topk))
                bar.update(len(batch))
        return records

    return _build(target, out, layer_ids, topk, target_name, settings, prompts, shard_prompts, shard_records,
                  desc="self-distillation", unit="response", per_item=len(modes), progress=progress)


def generate_text_data(*, target, tokenizer, texts: list, out: str, layer_ids: list, window: int = 512,
                       shard_texts: int = 64, topk: int = 64, target_name: str = "", source: str = "",
                       batch_size: int = 1, progress: bool = True) -> dict:
    """Write (or resume) a DATA folder from existing text, teacher-forced: one target forward per ``window`` tokens
    records the hidden states and the target's top-k next-token distribution at every position, with no
    generation (several times more tokens per second than self-distillation; measured in meta.json). ``batch_size``:
    full windows of a text per forward (a GPU wants several; the data is the same)."""
    settings = dict(kind="text", source=source, window=window, texts=len(texts), shard_texts=shard_texts)

    def shard_records(index, chunk, bar):
        records = []
        for text in chunk:
            records += list(_text_records(target, tokenizer, text, layer_ids, window, topk, batch_size))
            bar.update(1)
        return records

    return _build(target, out, layer_ids, topk, target_name, settings, texts, shard_texts, shard_records,
                  desc="teacher-forced text", unit="text", per_item=1, progress=progress)


def _build(target, out, layer_ids, topk, target_name, settings, items, per_shard, shard_records, *, desc, unit,
           per_item, progress) -> dict:
    """Shard by shard, resumably: ``shard_records(index, chunk, bar)`` makes one shard's records; finished shards
    are listed in meta.json and skipped by a rerun with the same settings, and ``complete`` says every shard is
    done (so a caller can skip loading the target)."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    text_config = target.config.get_text_config() if hasattr(target.config, "get_text_config") else target.config
    settings = dict(settings, target=target_name, layer_ids=list(layer_ids), hidden_size=text_config.hidden_size,
                    vocab_size=text_config.vocab_size, num_hidden_layers=text_config.num_hidden_layers, topk=topk)
    # what the shards hold, not only how many: a rerun over other prompts or texts (another --skip) is refused
    settings["items_digest"] = hashlib.sha1(json.dumps(items).encode()).hexdigest()[:12]
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else dict(settings, shards=[], seconds=0.0)
    if "items_digest" not in meta:  # a folder written before the digest was recorded
        meta["items_digest"] = settings["items_digest"]
    changed = {k: (meta.get(k), v) for k, v in settings.items() if meta.get(k) != v}
    if changed:
        raise ValueError(f"{out} holds data made with other settings {changed}; use a new folder")
    done = {s["name"] for s in meta["shards"]}
    chunks = [items[i : i + per_shard] for i in range(0, len(items), per_shard)]
    bar = tqdm(total=len(items) * per_item, desc=desc, unit=unit, disable=not progress)
    for index, chunk in enumerate(chunks):
        name = f"shard_{index:05d}"
        if name in done:
            bar.update(len(chunk) * per_item)
            continue
        t0 = time.perf_counter()
        records = shard_records(index, chunk, bar)
        if not records:
            continue
        mass = float(torch.cat([lp.float().exp().sum(-1) for *_, lp in records]).mean())
        n = write_shard(out / name, records)
        meta["shards"].append(dict(name=name, sequences=len(records), tokens=n, topk_mass=mass))
        meta["seconds"] += time.perf_counter() - t0
        meta["tokens"] = sum(s["tokens"] for s in meta["shards"])
        meta["tokens_per_s"] = meta["tokens"] / meta["seconds"]
        meta["topk_mass"] = sum(s["topk_mass"] * s["tokens"] for s in meta["shards"]) / meta["tokens"]
        meta_path.write_text(json.dumps(meta, indent=2))
        bar.set_postfix(tokens=meta["tokens"], tok_s=f"{meta['tokens_per_s']:.0f}")
    bar.close()
    meta["complete"] = True
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


class DistillationData(torch.utils.data.Dataset):
    """Training windows over one or more DATA folders (a list, or one string with commas: a mix of, say,
    self-distilled responses and teacher-forced text): each item is one sequence cut to at most ``window`` positions.

    item: tokens [T + 1] long, feats [T, 3 d_t] bf16, loss_mask [T] bool (position t is trained to predict token
    t + 2, a response token; any_mask: any token t + 2, prompt tokens included), target_ids [T, k] long and
    target_logp [T, k] fp32: the target's top-k distribution of token t + 2 (the target's prediction at t + 1)."""

    SHARED = ("target", "layer_ids", "hidden_size", "vocab_size", "num_hidden_layers", "topk")

    def __init__(self, folders, window: int = 256):
        folders = str(folders).split(",") if isinstance(folders, (str, os.PathLike)) else list(folders)
        self.folders = [Path(f) for f in folders if str(f)]
        metas = [json.loads((f / "meta.json").read_text()) for f in self.folders]
        for f, m in zip(self.folders[1:], metas[1:]):
            differ = {k: (metas[0].get(k), m.get(k)) for k in self.SHARED if m.get(k) != metas[0].get(k)}
            if differ:
                raise ValueError(f"{f} cannot be mixed with {self.folders[0]}: they differ in {differ}")
        self.meta = dict(metas[0], folders=[str(f) for f in self.folders],
                         tokens=sum(m.get("tokens", 0) for m in metas))
        self.window = window
        self.shard_keys = [(f, s["name"]) for f, m in zip(self.folders, metas) for s in m["shards"]]
        self.items = []
        self.shards = {}
        for key in self.shard_keys:
            offsets = np.load(key[0] / key[1] / "offsets.npy")
            for a, b in zip(offsets[:-1], offsets[1:]):
                for start in range(int(a), int(b) - 2, window):
                    self.items.append((key, start, min(int(b), start + window + 1)))

    def _arrays(self, key):
        if key not in self.shards:
            self.shards[key] = {n: np.load(key[0] / key[1] / f"{n}.npy", mmap_mode="r")
                                for n in ("tokens", "mask", "feats", "topk_ids", "topk_logp")}
        return self.shards[key]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        key, a, b = self.items[i]
        arr = self._arrays(key)
        tokens = torch.from_numpy(np.asarray(arr["tokens"][a:b], dtype=np.int64))
        T = len(tokens) - 1
        mask = torch.from_numpy(np.asarray(arr["mask"][a:b], dtype=np.bool_))
        loss_mask = torch.zeros(T, dtype=torch.bool)
        loss_mask[: T - 1] = mask[2:]  # position t predicts token t + 2
        any_mask = torch.zeros(T, dtype=torch.bool)
        any_mask[: T - 1] = True  # every position with a token t + 2 in the window (prompt positions included)
        return dict(tokens=tokens, feats=from_int16(arr["feats"][a : a + T]), loss_mask=loss_mask, any_mask=any_mask,
                    target_ids=torch.from_numpy(np.asarray(arr["topk_ids"][a + 1 : a + T + 1], dtype=np.int64)),
                    target_logp=torch.from_numpy(np.asarray(arr["topk_logp"][a + 1 : a + T + 1], dtype=np.float32)))

    def feature_rows(self, positions: int) -> torch.Tensor:
        """The stored target features of the first ``positions`` positions of each folder, [N, 3 d_t] bf16 (each
        folder contributes: a mix's features are scaled for all of its sources)."""
        rows = []
        for folder in self.folders:
            seen = 0
            for key in (k for k in self.shard_keys if k[0] == folder):
                feats = self._arrays(key)["feats"]
                take = min(len(feats), positions - seen)
                rows.append(from_int16(feats[:take]))
                seen += take
                if seen >= positions:
                    break
        return torch.cat(rows)

    def token_counts(self, vocab_size: int) -> torch.Tensor:
        """Frequencies of trained tokens (for a truncated draft vocabulary, EAGLE-3 / VocabTrim style)."""
        counts = torch.zeros(vocab_size, dtype=torch.long)
        for key in self.shard_keys:
            arr = self._arrays(key)
            toks = torch.from_numpy(np.asarray(arr["tokens"], dtype=np.int64))
            keep = torch.from_numpy(np.asarray(arr["mask"], dtype=np.bool_))
            counts += torch.bincount(toks[keep], minlength=vocab_size)
        return counts


def collate(items: list) -> dict:
    """Right-pad a list of windows to one batch (padded positions carry no loss)."""
    T = max(len(x["tokens"]) - 1 for x in items)
    B = len(items)
    d3, k = items[0]["feats"].shape[-1], items[0]["target_ids"].shape[-1]
    batch = dict(tokens=torch.zeros(B, T + 1, dtype=torch.long), feats=torch.zeros(B, T, d3, dtype=torch.bfloat16),
                 loss_mask=torch.zeros(B, T, dtype=torch.bool), any_mask=torch.zeros(B, T, dtype=torch.bool), target_ids=torch.zeros(B, T, k, dtype=torch.long),
                 target_logp=torch.zeros(B, T, k))
    for i, x in enumerate(items):
        n = len(x["tokens"]) - 1
        batch["tokens"][i, : n + 1] = x["tokens"]
        for name in ("feats", "loss_mask", "any_mask", "target_ids", "target_logp"):
            batch[name][i, :n] = x[name]
    return batch

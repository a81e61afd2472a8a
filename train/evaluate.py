"""Drafter quality as speculative decoding sees it: tau and per-position acceptance with the adapter.

    tau = tokens per verification pass (accepted drafts + the target's bonus token; EAGLE's acceptance length)
    acceptance[i] = P(draft i+1 accepted | drafts 1..i accepted)

Measured with ``target.generate(..., assistant_model=drafter)``, greedy, K drafts per pass, on held-out prompts
(``slimspec.heldout``: the balanced set, categories interleaved, never used for training data).
"""

from __future__ import annotations

import torch


def merge_stats(runs: list):
    """One SlimSpecGenerateStats over several generate calls (passes concatenated, times summed)."""
    merged = type(runs[0])()
    for s in runs:
        merged.new_tokens += s.new_tokens
        merged.target_passes += s.target_passes
        merged.drafted_per_pass += s.drafted_per_pass
        merged.accepted_per_pass += s.accepted_per_pass
        for name in ("drafter_seconds", "head_seconds", "select_seconds", "adapter_seconds"):
            setattr(merged, name, getattr(merged, name) + getattr(s, name))
    return merged


@torch.inference_mode()
def evaluate_drafter(target, tokenizer, drafter, *, prompts: int | list = 16, num_assistant_tokens: int = 5,
                     max_new_tokens: int = 64, progress: bool = True) -> dict:
    """Greedy assisted generation on held-out prompts -> dict(tau, per_position_acceptance, passes, new_tokens).

    The drafter is attached to ``target`` for the call and detached afterwards; its draft length is restored."""
    from tqdm.auto import tqdm

    from slimspec.heldout import held_out_prompts

    prompts = [p for _, p in held_out_prompts()[:prompts]] if isinstance(prompts, int) else prompts
    config = drafter.generation_config
    saved = (config.num_assistant_tokens, config.num_assistant_tokens_schedule)
    config.num_assistant_tokens, config.num_assistant_tokens_schedule = num_assistant_tokens, "constant"
    drafter.eval().attach(target)
    runs = []
    try:
        for prompt in tqdm(prompts, desc=f"tau (K={num_assistant_tokens})", unit="prompt", disable=not progress):
            inputs = tokenizer(prompt, return_tensors="pt")
            target.generate(**inputs, assistant_model=drafter, do_sample=False, max_new_tokens=max_new_tokens)
            runs.append(drafter.last_generate_stats)
    finally:
        drafter.detach()
        config.num_assistant_tokens, config.num_assistant_tokens_schedule = saved
    s = merge_stats(runs)
    return dict(tau=s.tau, per_position_acceptance=s.per_position_acceptance(), passes=s.target_passes,
                new_tokens=s.new_tokens, prompts=len(prompts), num_assistant_tokens=num_assistant_tokens,
                max_new_tokens=max_new_tokens, stats=s)

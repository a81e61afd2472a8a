"""Drafter quality as speculative decoding sees it: tau and per-position acceptance with the adapter.

    tau = tokens per verification pass (accepted drafts + the target's bonus token; EAGLE's acceptance length)
    acceptance[i] = P(draft i+1 accepted | drafts 1..i accepted)

Measured with ``target.generate(..., assistant_model=drafter)``, greedy, K drafts per pass, on held-out prompts
(``slimspec.heldout``: the balanced set, categories interleaved, never used for training data).
"""

from __future__ import annotations

from slimspec.runner import Method, attached, run_methods


def evaluate_drafter(target, tokenizer, drafter, *, prompts: int | list = 16, num_assistant_tokens: int = 5,
                     max_new_tokens: int = 64, progress: bool = True) -> dict:
    """Greedy assisted generation on held-out prompts -> dict(tau, per_position_acceptance, passes, new_tokens).

    The drafter is attached to ``target`` for the call and detached afterwards; its draft length is restored."""
    from slimspec.heldout import held_out_prompts

    prompts = [p for _, p in held_out_prompts()[:prompts]] if isinstance(prompts, int) else prompts
    method = Method("drafter", "drafter", num_assistant_tokens, drafter.eval())
    with attached(drafter, target):
        tally = run_methods(target, tokenizer, [method], prompts, dict(do_sample=False, max_new_tokens=max_new_tokens),
                            warmup=False, desc=f"tau (K={num_assistant_tokens})", progress=progress)["drafter"]
    s = tally.merged_stats()
    return dict(tau=s.tau, per_position_acceptance=s.per_position_acceptance(), passes=s.target_passes,
                new_tokens=s.new_tokens, prompts=len(prompts), num_assistant_tokens=num_assistant_tokens,
                max_new_tokens=max_new_tokens, stats=s)

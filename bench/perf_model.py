"""The SlimSpec performance model and the project's speed targets, on the numbers of one e2e run.

Roles, not names: the model is relative to the *dense* drafter (dense head, full vocabulary) and the targets
compare the *subject* (a low-rank head at r = d/8) with plain decoding, prompt lookup, the *truncated* drafter
(dense head, truncated draft vocabulary) and the dense one. ``infer_roles`` finds them from the drafters' heads;
``slimspec-bench e2e --role ROLE=NAME`` names them instead.
"""

from __future__ import annotations

from .e2e_run import SPLIT_PARTS

ROLES = ("subject", "dense", "truncated")


def predicted_speedup(rho_tau: float, nu: float, kappa: float) -> float:
    """SlimSpec's performance model (from the SlimSpec paper), speedup of drafter M over the full (dense) head:

        speedup = rho_tau * (1 + kappa) / (1 + nu * kappa)

    rho_tau = tau_M / tau_full (acceptance length kept), nu = T_head(M) / T_head(full) (head latency factor),
    kappa = T_head(full) / T_non_head (how much the dense head dominates a cycle). As nu -> 0 the speedup tends to
    its upper bound rho_tau * (1 + kappa)."""
    return rho_tau * (1.0 + kappa) / (1.0 + nu * kappa)


def perf_model(methods: dict, dense_name: str | None) -> dict | None:
    """The model's inputs measured on one run, for every drafter other than ``dense_name`` (None if it is absent).

    nu uses head time per drafted token; kappa is per cycle (target pass) of the dense run: dense head time over
    the rest of its assisted time (target forward, drafter body, overhead)."""
    dense = methods.get(dense_name)
    if dense is None or not dense.get("head_ms_per_drafted_token"):
        return None
    split = dense["time_split_ms_per_pass"]
    head = split["drafter_head"]
    kappa = head / (sum(split.values()) - head)
    out = {}
    for name, m in methods.items():
        if name == dense_name or m.get("head_ms_per_drafted_token") is None or m.get("kind") == "hybrid":
            continue  # the model is about the head; a hybrid's tau includes lookup drafts, which have none
        rho = m["tau"] / dense["tau"]
        nu = m["head_ms_per_drafted_token"] / dense["head_ms_per_drafted_token"]
        out[name] = dict(rho_tau=rho, nu=nu, kappa=kappa, predicted=predicted_speedup(rho, nu, kappa),
                         bound=predicted_speedup(rho, 0.0, kappa),
                         measured=m["tokens_per_s"] / dense["tokens_per_s"])
    return out


def head_role(config) -> str | None:
    """"dense", "truncated" or "subject" for a drafter config with that head; None for any other head."""
    if config.head_rank is None:
        return "dense" if config.draft_vocab_size is None else "truncated"
    return "subject" if config.head_rank == config.hidden_size // 8 else None


def infer_roles(drafters: dict, given: dict | None = None) -> dict:
    """{role: drafter name}: the ``given`` ones, and for each other role the first drafter whose head fits it."""
    roles = dict(given or {})
    for name, drafter in drafters.items():
        roles.setdefault(head_role(drafter.config), name)
    return {role: roles[role] for role in ROLES if role in roles}


# (label, method role or name, baseline role or name ("plain" = speedup column), threshold, strict)
TARGETS = [
    ("SlimSpec d/8 >= 2.0x plain", "subject", "plain", 2.0, False),
    ("SlimSpec d/8 > prompt lookup", "subject", "prompt_lookup", 1.0, True),
    ("SlimSpec d/8 >= 1.09x truncated-32k", "subject", "truncated", 1.09, False),
    ("SlimSpec d/8 >= 2x dense", "subject", "dense", 2.0, False),
]


def where_time_goes(name: str, m: dict) -> str:
    split = m["time_split_ms_per_pass"]
    cycle = sum(split.values())
    parts = ", ".join(f"{p.replace('_', ' ')} {100 * split[p] / cycle:.0f}%" for p in SPLIT_PARTS
                      if split[p] or p == "target_forward")
    return f"{name}: a cycle (target pass) takes {cycle:.1f} ms: {parts}; tau {m['tau']:.2f}"


def check_targets(methods: dict, roles: dict) -> list:
    """The project's targets on one run's methods; rows whose methods are absent are skipped."""
    rows = []
    for label, role, base_role, threshold, strict in TARGETS:
        name, base = (roles.get(r) if r in ROLES else r for r in (role, base_role))
        if name not in methods or base not in methods:
            continue
        ratio = methods[name]["tokens_per_s"] / methods[base]["tokens_per_s"]
        ok = ratio > threshold if strict else ratio >= threshold
        row = dict(target=label, method=name, baseline=base, measured=ratio, threshold=threshold, strict=strict,
                   margin=ratio / threshold - 1.0, status="PASS" if ok else "MISS")
        if not ok:
            why = [where_time_goes(name, methods[name])]
            if base != "plain":
                why.append(where_time_goes(base, methods[base]))
            row["where_time_goes"] = " | ".join(why)
        rows.append(row)
    return rows


def build_result(*, target_name: str, prompts: int, max_new_tokens: int, k: int, runs: dict, k_sweep: dict | None,
                 roles: dict, seed: int = 0) -> dict:
    """Everything in results.json: the runs plus the perf model (per run) and the targets (bf16 greedy)."""
    dense_name = roles.get("dense")
    models = {key: perf_model(r["methods"], dense_name) for key, r in runs.items()}
    headline = runs.get("bf16/greedy")
    targets_note = None
    if headline is None:
        targets_note = "targets are defined on bf16 greedy, which was not run"
    elif k != 5:
        targets_note = f"targets are defined at K = 5; this run used K = {k}"
    return dict(target=target_name, prompts=prompts, max_new_tokens=max_new_tokens, k=k, seed=seed,
                dense_name=dense_name, roles=roles, runs=runs, k_sweep=k_sweep,
                perf_model={key: m for key, m in models.items() if m},
                targets=check_targets(headline["methods"], roles) if headline else [], targets_note=targets_note)

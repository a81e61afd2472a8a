"""The end-to-end benchmark's plots (PNG, matplotlib's Agg backend) from results.json's numbers."""

from __future__ import annotations

from pathlib import Path


def _headline(r: dict) -> tuple:
    key = "bf16/greedy" if "bf16/greedy" in r["runs"] else next(iter(r["runs"]))
    return key, r["runs"][key]


def plot_speedup(plt, r: dict):
    """Grouped bars per method, one bar per dtype/mode."""
    keys = list(r["runs"])
    names = list(dict.fromkeys(n for run in r["runs"].values() for n in run["methods"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        vals = [r["runs"][key]["methods"].get(n, {}).get("speedup_vs_plain", float("nan")) for n in names]
        ax.bar([i + (j - (len(keys) - 1) / 2) * width for i in range(len(names))], vals, width, label=key)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("speedup vs plain")
    ax.set_title(f"{r['target']}: end-to-end speedup (K = {r['k']})")
    ax.legend(fontsize=8)
    return fig


def plot_pareto(plt, r: dict):
    """tau against drafting cost, headline run."""
    key, run = _headline(r)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, m in run["methods"].items():
        if m["draft_ms_per_token"] is not None:
            ax.scatter(m["draft_ms_per_token"], m["tau"])
            ax.annotate(name, (m["draft_ms_per_token"], m["tau"]), fontsize=8, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("draft ms per drafted token (body + head)")
    ax.set_ylabel("tau")
    ax.set_title(f"tau vs drafting cost ({key})")
    ax.grid(alpha=0.3)
    return fig


def plot_acceptance(plt, r: dict):
    """Per-position acceptance, one panel per run."""
    keys = list(r["runs"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, m in r["runs"][key]["methods"].items():
            acc = m["per_position_acceptance"]
            if acc:
                ax.plot(range(1, len(acc) + 1), acc, "o-", label=name)
        ax.set_xlabel("draft position")
        ax.set_ylabel("P(accepted | previous accepted)")
        ax.set_ylim(0, 1.02)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def plot_k_sweep(plt, r: dict):
    """Speedup and tau against K."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    sweep = r.get("k_sweep")
    if sweep:
        for name, m in sweep["methods"].items():
            axes[0].plot(sweep["ks"], m["speedup_vs_plain"], "o-", label=name)
            axes[1].plot(sweep["ks"], m["tau"], "o-", label=name)
        axes[0].legend(fontsize=8)
        for ax in axes:
            ax.set_xticks(sweep["ks"])
    else:
        axes[0].text(0.5, 0.5, "K sweep not run", ha="center", transform=axes[0].transAxes)
    axes[0].set_ylabel("speedup vs plain")
    axes[1].set_ylabel("tau")
    for ax in axes:
        ax.set_xlabel("K (drafts per pass)")
        ax.grid(alpha=0.3)
    return fig


def plot_perf_model(plt, r: dict):
    """The performance model's predicted speedup over the dense drafter against the measured one."""
    fig, ax = plt.subplots(figsize=(5, 5))
    pts = [(f"{n} ({key})", p["predicted"], p["measured"]) for key, model in r["perf_model"].items()
           for n, p in model.items()]
    for label, pred, meas in pts:
        ax.scatter(pred, meas, label=label)
    lim = max([1.0] + [max(p, m) for _, p, m in pts]) * 1.1
    ax.plot([0, lim], [0, lim], "--", color="gray", lw=0.8, label="y = x")
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel("predicted speedup over dense")
    ax.set_ylabel("measured speedup over dense")
    ax.set_title("performance model" if pts else "performance model (no dense drafter)")
    ax.legend(fontsize=7)
    return fig


PLOTS = {"speedup.png": plot_speedup, "pareto.png": plot_pareto, "acceptance.png": plot_acceptance,
         "k_sweep.png": plot_k_sweep, "perf_model.png": plot_perf_model}


def write_plots(r: dict, out: Path) -> list:
    """Every plot of ``PLOTS`` into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, plot in PLOTS.items():
        fig = plot(plt, r)
        fig.tight_layout()
        fig.savefig(Path(out) / name, dpi=110)
        plt.close(fig)
        paths.append(Path(out) / name)
    return paths

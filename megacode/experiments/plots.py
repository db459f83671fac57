"""PNG figures of the experiments (matplotlib, headless Agg backend; small files for the README)."""

from __future__ import annotations

from pathlib import Path
from typing import List

DPI = 100
LABELS = {"base": "base (L, θ 10^4)", "lcft_theta_1e6": "LCFT 4L, θ 10^6", "lcft_theta_1e4": "LCFT 4L, θ 10^4 kept"}
COLORS = {"base": "#7f7f7f", "lcft_theta_1e6": "#1f77b4", "lcft_theta_1e4": "#d62728",
          "fim": "#1f77b4", "no_fim": "#d62728", "psm": "#1f77b4", "spm": "#17becf", "l2r": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _bars(ax, names: List[str], values: List[float], colors: List[str], fmt: str) -> None:
    bars = ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), names, fontsize=8)
    for bar, v in zip(bars, values):
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)


def fim_figure(results: dict, path: Path) -> Path:
    """Three panels: held-out left-to-right loss, middle loss per layout, exact match."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    l2r = results["l2r_loss"]
    _bars(axes[0], ["FIM 0.9", "no FIM"], [l2r["fim"], l2r["no_fim"]], [COLORS["fim"], COLORS["no_fim"]], "{:.3f}")
    axes[0].set_title("held-out left-to-right loss", fontsize=10)
    axes[0].set_ylabel("nats / token")
    infill = results["infill_loss"]
    _bars(axes[1], ["PSM\n(FIM)", "SPM\n(FIM)", "prefix only\n(no FIM)"],
          [infill["psm"]["fim"], infill["spm"]["fim"], infill["psm"]["l2r_prefix_only"]],
          [COLORS["psm"], COLORS["spm"], COLORS["l2r"]], "{:.3f}")
    axes[1].set_title("loss of held-out middles", fontsize=10)
    match = results["infill_exact_match"]
    kinds, layouts = ["single_line", "multi_line"], ["psm", "spm", "l2r"]
    width = 0.26
    for j, layout in enumerate(layouts):
        xs = [i + (j - 1) * width for i in range(len(kinds))]
        values = [100 * match[k][layout] for k in kinds]
        bars = axes[2].bar(xs, values, width, color=COLORS[layout],
                           label={"psm": "PSM (FIM)", "spm": "SPM (FIM)", "l2r": "left to right (no FIM)"}[layout])
        for bar, v in zip(bars, values):
            axes[2].annotate(f"{v:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                             va="bottom", fontsize=7)
    axes[2].set_ylim(0, max(10.0, 1.2 * max(100 * v for m in match.values() for v in m.values())))
    axes[2].set_xticks(range(len(kinds)), ["single-line", "multi-line"], fontsize=8)
    axes[2].set_ylabel("exact match, %")
    axes[2].set_title("greedy infilling, held-out files", fontsize=10)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"FIM rate 0.9 vs 0, {results['tokens']:,} training tokens each ({results['scale']})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def lcft_figure(results: dict, path: Path) -> Path:
    """Perplexity against evaluation context length (Figure 4a's analogue) and, when measured,
    key-retrieval accuracy against distance (Table 18's)."""
    plt = _pyplot()
    retrieval = results.get("retrieval")
    fig, axes = plt.subplots(1, 2 if retrieval else 1, figsize=(11 if retrieval else 6, 3.8), squeeze=False)
    ax = axes[0][0]
    L, L4 = results["train_length"], results["lcft_length"]
    for name, values in results["perplexity"].items():
        ax.plot(results["eval_lengths"], values, marker="o", label=LABELS.get(name, name), color=COLORS.get(name))
    ax.set_xscale("log", base=2)
    for x, text in ((L, " L"), (L4, " 4L")):
        ax.axvline(x, color="#999999", linestyle=":", linewidth=1)
        ax.annotate(text, (x, 0.97), xycoords=("data", "axes fraction"), ha="left", va="top", fontsize=8,
                    color="#666666")
    ax.set_xticks(results["eval_lengths"], [str(n) for n in results["eval_lengths"]], fontsize=8)
    ax.set_xlabel("evaluation context length (tokens)")
    ax.set_ylabel("held-out perplexity")
    ax.legend(fontsize=8)
    if retrieval:
        ax = axes[0][1]
        for name, values in retrieval["accuracy"].items():
            ax.plot(retrieval["distances"], [100 * v for v in values], marker="o", label=LABELS.get(name, name),
                    color=COLORS.get(name))
        ax.set_xscale("log", base=2)
        for x in (L, L4):
            ax.axvline(x, color="#999999", linestyle=":", linewidth=1)
        ax.set_xticks(retrieval["distances"], [str(n) for n in retrieval["distances"]], fontsize=7)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("key distance (tokens)")
        ax.set_ylabel("key retrieval, %")
        ax.legend(fontsize=8)
    fig.suptitle(f"long-context fine-tuning at 4L = {L4} from L = {L} ({results['scale']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path

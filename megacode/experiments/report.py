"""results.json and report.md: the measured numbers beside the paper's, and the paper's expected
directions checked on them (facts of one run, not test assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

# Code Llama (arXiv 2308.12950) numbers, 7B unless said.
PAPER = {
    "l2r_loss": "0.408 → 0.407 (Table 5, 7B test loss without → with FIM)",
    "single_line": "pass@1 77.0 / 83.3 (Table 14, HumanEval single-line infilling, PSM / SPM)",
    "multi_line": "pass@1 49.7 / 51.2 (Table 14, HumanEval multi-line infilling, PSM / SPM)",
    "infill_loss": "not reported (Bavarian et al. 2022: FIM models infill, left-to-right models cannot use a suffix)",
    "base": "θ 10^4, no LCFT: key retrieval 95–100% at 4K, 0.0 from 8K (Table 18)",
    "lcft_theta_1e4": "LCFT keeping θ 10^4: 0.0–58.6% at 8K, 0 at 16K (Table 18)",
    "lcft_theta_1e6": "LCFT with θ 10^6: 54.7 / 100 / 98.4% at 16K (Table 18); perplexity falls to 100K (Figure 4a)",
}

Check = Tuple[str, str, bool]  # (expected direction, measured, holds)


def fim_checks(r: dict) -> List[Check]:
    l2r, infill, match = r["l2r_loss"], r["infill_loss"], r["infill_exact_match"]
    gap = (l2r["fim"] - l2r["no_fim"]) / l2r["no_fim"]
    out = [("FIM model's held-out left-to-right loss within 2% of the no-FIM model's",
            f"{l2r['fim']:.4f} vs {l2r['no_fim']:.4f} ({100 * gap:+.2f}%)", abs(gap) <= 0.02)]
    for layout in ("psm", "spm"):
        a, b = infill[layout]["fim"], infill[layout]["l2r_prefix_only"]
        out.append((f"{layout.upper()} middle loss clearly (>= 5%) below the prefix-only loss",
                    f"{a:.4f} vs {b:.4f} ({100 * (a - b) / b:+.1f}%)", a <= 0.95 * b))
    for kind in ("single_line", "multi_line"):
        m = match[kind]
        out.append((f"{kind.replace('_', '-')} exact match: PSM and SPM above left to right",
                    f"PSM {100 * m['psm']:.1f}%, SPM {100 * m['spm']:.1f}%, l2r {100 * m['l2r']:.1f}%",
                    m["psm"] > m["l2r"] and m["spm"] > m["l2r"]))
    return out


def lcft_checks(r: dict) -> List[Check]:
    lengths, ppl = r["eval_lengths"], r["perplexity"]
    L, L4 = r["train_length"], r["lcft_length"]
    at = {name: dict(zip(lengths, values)) for name, values in ppl.items()}
    beyond_L = [n for n in lengths if n > L]
    upto_4L = [n for n in lengths if L <= n <= L4]
    beyond_4L = [n for n in lengths if n > L4]
    base, new, kept = at["base"], at["lcft_theta_1e6"], at["lcft_theta_1e4"]
    out = [("base perplexity rises sharply beyond L (x1.25 or more at the next length)",
            f"{base[L]:.2f} at L → {base[beyond_L[0]]:.2f} at {beyond_L[0]}", base[beyond_L[0]] >= 1.25 * base[L]),
           ("LCFT θ 10^6 flat to 4L (no length in L..4L above its value at L by > 5%)",
            ", ".join(f"{n}: {new[n]:.2f}" for n in upto_4L), max(new[n] for n in upto_4L) <= 1.05 * new[L])]
    if beyond_4L:
        rise = {name: at[name][beyond_4L[-1]] / at[name][L4] for name in at}
        out.append(("LCFT θ 10^6 degrades least beyond 4L (smallest rise from 4L to the longest length)",
                    ", ".join(f"{name} x{v:.2f}" for name, v in rise.items()),
                    rise["lcft_theta_1e6"] == min(rise.values())))
        out.append(("LCFT θ 10^6 below LCFT θ 10^4 at every length past 4L",
                    ", ".join(f"{n}: {new[n]:.2f} vs {kept[n]:.2f}" for n in beyond_4L),
                    all(new[n] < kept[n] for n in beyond_4L)))
    return out


def _table(rows: List[List[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def fim_markdown(r: dict) -> str:
    l2r, infill, match = r["l2r_loss"], r["infill_loss"], r["infill_exact_match"]
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    rows = [["measure", "paper (Code Llama 7B)", f"this run ({r['scale']})"],
            ["left-to-right loss, no FIM → FIM", PAPER["l2r_loss"], f"{l2r['no_fim']:.4f} → {l2r['fim']:.4f} (held out)"],
            ["middle loss PSM / SPM (FIM) vs prefix only (no FIM)", PAPER["infill_loss"],
             f"{infill['psm']['fim']:.3f} / {infill['spm']['fim']:.3f} vs {infill['psm']['l2r_prefix_only']:.3f}"],
            ["single-line infilling PSM / SPM / l2r", PAPER["single_line"],
             f"exact match {pct(match['single_line']['psm'])} / {pct(match['single_line']['spm'])} / "
             f"{pct(match['single_line']['l2r'])} %"],
            ["multi-line infilling PSM / SPM / l2r", PAPER["multi_line"],
             f"exact match {pct(match['multi_line']['psm'])} / {pct(match['multi_line']['spm'])} / "
             f"{pct(match['multi_line']['l2r'])} %"]]
    d = r["details"]
    notes = (f"Held-out: {d['l2r_documents']} documents ({d['l2r_tokens']} tokens) for the left-to-right loss, "
             f"{d['loss_cases']['cases']} middles (mean {d['loss_cases']['mean_lines']:.1f} lines) for the middle loss, "
             f"{d['match_cases']['single_line']['cases']} single-line and {d['match_cases']['multi_line']['cases']} "
             f"multi-line cases for exact match. The FIM model read left to right (prefix only) has middle loss "
             f"{d['fim_model_prefix_only_loss']:.3f}. Inference prompt + middle differed from the C++ training "
             f"layout in {d['training_layout_mismatches']} cases. The trainer's FIM probe of its samples: "
             f"{d.get('fim_probe', 'n/a')}.")
    use = d.get("suffix_use", {})
    if use:
        notes += ("\n\nSuffix use (FIM model, middle loss with the true suffix / another case's suffix; loss of "
                  "<EOT> right after the true middle): " + "; ".join(
                      f"{k.upper()} {v['true_suffix']:.3f} / {v['other_suffix']:.3f}, <EOT> {v['eot_after_middle']:.2f}"
                      for k, v in use.items()) + ".")
    cut = d.get("exact_match_at_line_count", {})
    if cut:
        notes += ("\n\nExact match of the FIM model's PSM / SPM outputs cut at the true middle's line count (as "
                  "the left-to-right model's are, instead of at <EOT>): " + "; ".join(
                      f"{kind.replace('_', '-')} {pct(v['psm'])} / {pct(v['spm'])} %" for kind, v in cut.items()) + ".")
    notes += _probe_note(d)
    return _table(rows) + "\n\n" + notes


def _probe_note(details: dict) -> str:
    probe = details.get("copy_probe")
    if not probe:
        return ""
    return ("\n\nCopy probe (megacode.eval.induction; loss on random runs of pieces / on their repeat; a model "
            "that copies from its context predicts the repeat far better): "
            + "; ".join(f"{name} {p['first']:.2f} / {p['repeat']:.2f}" for name, p in probe.items()) + ".")


def lcft_markdown(r: dict) -> str:
    rows = [["model", "paper (Code Llama 7B)"] + [f"ppl @ {n}" for n in r["eval_lengths"]]]
    for name, values in r["perplexity"].items():
        rows.append([f"{name} (θ {r['rope_base'][name]:g})", PAPER[name]] + [f"{v:.2f}" for v in values])
    text = _table(rows)
    if "retrieval" in r:
        ret = r["retrieval"]
        rows = [["model"] + [f"key @ {d}" for d in ret["distances"]]]
        rows += [[name] + [f"{100 * v:.0f}%" for v in values] for name, values in ret["accuracy"].items()]
        text += (f"\n\nKey retrieval ({ret['prompts_per_distance']} prompts per distance, greedy):\n\n" + _table(rows))
    else:
        text += "\n\nKey retrieval: not run at this scale (lcft.eval.retrieval_prompts: 0)."
    return text + _probe_note(r.get("details", {}))


def write_outputs(r: dict, out: Path) -> List[Path]:
    """results.json, report.md and the figure under `out`; returns the files written."""
    from megacode.experiments import plots

    exp = r["experiment"]
    checks = fim_checks(r) if exp == "fim" else lcft_checks(r)
    r["checks"] = [{"expected": e, "measured": m, "holds": h} for e, m, h in checks]
    figure = (plots.fim_figure if exp == "fim" else plots.lcft_figure)(r, out / f"{exp}.png")
    r["figures"] = [figure.name]
    (out / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    body = fim_markdown(r) if exp == "fim" else lcft_markdown(r)
    check_rows = [["expected (the paper's direction)", "measured", "holds"]]
    check_rows += [[e, m, "yes" if h else "**no**"] for e, m, h in checks]
    runs = "\n".join(f"- `{name}`: {run['tokens']:,} tokens in {run['seconds'] / 60:.1f} min"
                     + (" (an earlier run's, reused)" if run.get("reused") else "") + f": `{run['command']}`"
                     for name, run in r["runs"].items())
    md = (f"# {exp} at scale {r['scale']}\n\n![{exp}]({figure.name})\n\n{body}\n\n## Expected directions\n\n"
          f"{_table(check_rows)}\n\n## Runs\n\nWhole experiment: {r['seconds'] / 60:.1f} min. Corpus: "
          f"{r['corpus']['files']['train']} train / {r['corpus']['files']['heldout']} held-out files "
          f"(digest {r['corpus']['sha256'][:12]}).\n\n{runs}\n")
    (out / "report.md").write_text(md)
    return [out / "results.json", out / "report.md", figure]

"""Reproductions of the Code Llama paper's ablations at CPU scale (tools/reproduce.py).

Top floor, beside tools/: these modules use training (megacode.train under torchrun), data
(preprocessing, indexed datasets, the C++ FIM), the converter and megacode.eval; nothing below
imports them.

    config.py      the experiment configs (configs/experiments/*.yaml), typed
    corpus.py      source files of this Python, split by file, cut into documents
    assets.py      corpus, tokenizer and indexed datasets, cached under a content hash
    launch.py      one training run: run config, torchrun, progress with ETA, export to HF
    fim.py         FIM rate 0.9 vs 0 (Table 5, Table 14)
    lcft.py        long-context fine-tuning, θ 10^6 vs 10^4 (§2.4, Figure 4a, Table 18)
    report.py      results.json, report.md (with the paper's numbers), plots
"""

EXPERIMENTS = ("fim", "lcft")
SCALES = ("micro", "small")

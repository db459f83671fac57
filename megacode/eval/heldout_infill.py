"""Infilling on held-out files: whole-line middles, their loss per layout, greedy exact match.

A case cuts a document at line boundaries into prefix / middle / suffix (the middle is 1..n
whole lines, each with its newline), as the single- and multi-line infilling benchmarks do
(Code Llama Table 14; Bavarian et al. 2022). Cases are kept only where tokenization is
*aligned*: enc(prefix + middle) = enc(prefix) + enc'(middle). Then the middle is the very same
ids in every layout, so losses compare token for token:

    psm   context = infill_prompt(prefix, suffix, spm=False)  <s> <PRE> enc(prefix) <SUF> enc'(suffix) <MID>
    spm   context = infill_prompt(prefix, suffix, spm=True)   <s> <PRE> <SUF> enc'(suffix) <MID> enc(prefix)
    l2r   context = <s> enc(prefix)                            (a left-to-right model: no suffix)
    target = enc'(middle) in all three

(prompts from megacode.data.fim, as a user infills; `training_layout_matches` checks that each
prompt + middle is exactly what the C++ training transform makes of the same split.)

Exact match: greedy generation. psm / spm stop at <EOT> and are cut by `infill_text`; l2r
continues the prefix and its text is cut after as many lines as the true middle has (a
left-to-right model has no way to say where the middle ends, so it is given the line count).
Texts match when equal after dropping trailing whitespace on each line and trailing blank lines.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

LAYOUTS = ("psm", "spm", "l2r")


@dataclass(frozen=True)
class InfillCase:
    document: int
    """Index of the held-out document the case is cut from."""
    prefix: str
    middle: str
    suffix: str

    @property
    def lines(self) -> int:
        return self.middle.count("\n") + (0 if self.middle.endswith("\n") else 1)


def aligned(tok, prefix: str, middle: str) -> bool:
    """Whether enc(prefix + middle) = enc(prefix) + enc'(middle)."""
    head, whole = tok.encode(prefix), tok.encode(prefix + middle)
    return whole[:len(head)] == head and whole[len(head):] == tok.encode_infill(middle)


def _has_code(line: str) -> bool:
    return any(ch.isalnum() for ch in line)


def make_cases(tok, texts: Sequence[str], count: int, min_lines: int, max_lines: int, seed: int,
               max_tries: int = 50) -> List[InfillCase]:
    """`count` aligned cases whose middle is `min_lines`..`max_lines` whole lines (every line of a
    one-line middle, and the first and last of longer ones, hold a letter or digit); documents,
    positions and sizes drawn from `seed`. Fewer when the texts do not hold enough."""
    if not 1 <= min_lines <= max_lines:
        raise ValueError(f"need 1 <= min_lines <= max_lines, got {min_lines}, {max_lines}")
    rng = random.Random(seed)
    usable = [k for k, t in enumerate(texts) if len(t.splitlines()) > min_lines]
    cases: List[InfillCase] = []
    seen = set()
    for _ in range(count * max_tries):
        if len(cases) >= count or not usable:
            break
        doc = rng.choice(usable)
        lines = texts[doc].splitlines(keepends=True)
        size = rng.randint(min_lines, min(max_lines, len(lines)))
        first = rng.randrange(0, len(lines) - size + 1)
        chosen = lines[first:first + size]
        if not lines[-1].endswith("\n") and first + size == len(lines):
            continue  # a middle that ends the document without a newline: no line to count
        if not (_has_code(chosen[0]) and _has_code(chosen[-1])) or (doc, first, size) in seen:
            continue
        prefix, middle = "".join(lines[:first]), "".join(chosen)
        if not aligned(tok, prefix, middle):
            continue
        seen.add((doc, first, size))
        cases.append(InfillCase(doc, prefix, middle, "".join(lines[first + size:])))
    return cases


def context_ids(tok, case: InfillCase, layout: str) -> List[int]:
    """The ids the middle is predicted from in `layout` (module docstring)."""
    from megacode.data.fim import infill_prompt

    if layout == "l2r":
        return [tok.bos_id] + tok.encode(case.prefix)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return infill_prompt(tok, case.prefix, case.suffix, spm=layout == "spm")


def loss_pairs(tok, cases: Sequence[InfillCase], layout: str) -> List[Tuple[List[int], List[int]]]:
    """(context, enc'(middle)) per case, for megacode.eval.lm_scoring.span_losses."""
    return [(context_ids(tok, c, layout), tok.encode_infill(c.middle)) for c in cases]


def training_layout_matches(tok, case: InfillCase, spm: bool) -> bool:
    """Whether <s> + the C++ training transform of the case's split (megacode.data.fim.fim_tokens)
    is the inference prompt + enc'(middle) + <EOT>: what the model learns is what it is asked."""
    from megacode.data.fim import fim_tokens

    text = case.prefix + case.middle + case.suffix
    lo, hi = len(case.prefix), len(case.prefix) + len(case.middle)
    trained = [tok.bos_id] + fim_tokens(tok, text, lo, hi, spm)
    asked = context_ids(tok, case, "spm" if spm else "psm") + tok.encode_infill(case.middle) + [tok.eot_id]
    return trained == asked


def with_other_suffixes(cases: Sequence[InfillCase], seed: int) -> List[InfillCase]:
    """The cases with the suffix of another case each (a random derangement): the middle's loss
    with a wrong suffix against the true one says how much a model reads the suffix."""
    if len(cases) < 2:
        raise ValueError("swapping suffixes needs at least 2 cases")
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    donor = {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}  # a cycle: nobody keeps its own
    return [InfillCase(c.document, c.prefix, c.middle, cases[donor[k]].suffix) for k, c in enumerate(cases)]


def eot_pairs(tok, cases: Sequence[InfillCase], layout: str) -> List[Tuple[List[int], List[int]]]:
    """(prompt + enc'(middle), [<EOT>]) per case: how sure the model is that the middle ends there."""
    return [(context_ids(tok, c, layout) + tok.encode_infill(c.middle), [tok.eot_id]) for c in cases]


def normalize(text: str) -> List[str]:
    """Lines without trailing whitespace, trailing blank lines dropped."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def first_lines(text: str, n: int) -> str:
    """The first `n` lines of `text` (with their newlines)."""
    return "".join(text.splitlines(keepends=True)[:n])


def exact_match(generated: str, case: InfillCase) -> bool:
    return normalize(generated) == normalize(case.middle)


def generate_middles(generator, tok, cases: Sequence[InfillCase], layout: str, slack: int = 8, cap: int = 128,
                     progress: Optional[Callable[[int, int], None]] = None) -> List[str]:
    """Greedy middles for `cases` in `layout` with `generator` (megacode.eval.infilling.InfillGenerator),
    each allowed 2 x its true middle's tokens + `slack` new tokens, at most `cap`; l2r is cut to the
    middle's line count."""
    out = []
    for k, case in enumerate(cases):
        budget = min(2 * len(tok.encode_infill(case.middle)) + slack, cap)
        if layout == "l2r":
            out.append(first_lines(generator.continuation(case.prefix, budget, max_lines=case.lines), case.lines))
        else:
            out.append(generator.middle(case.prefix, case.suffix, layout == "spm", max_new_tokens=budget))
        if progress is not None:
            progress(k + 1, len(cases))
    return out


def match_rate(outputs: Sequence[str], cases: Sequence[InfillCase]) -> float:
    if not cases:
        raise ValueError("no cases to score")
    return sum(exact_match(o, c) for o, c in zip(outputs, cases)) / len(cases)


def describe(cases: Sequence[InfillCase]) -> Dict[str, float]:
    """Counts for the report: cases, mean middle lines and characters."""
    n = max(len(cases), 1)
    return {"cases": len(cases), "mean_lines": sum(c.lines for c in cases) / n,
            "mean_chars": sum(len(c.middle) for c in cases) / n}

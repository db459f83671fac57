"""Synthetic key retrieval (Code Llama §3.3 and Table 18), by distance.

A prompt is Python code with a function returning an integer key near its start, then other
code (held-out files, whole, in a random order) until the function is `distance` tokens back,
then an assert on its value; the model must complete the assert with the key:

    <s> def key_qwhzpb():
            return 4821


        <held-out code, about `distance` tokens>

    assert key_qwhzpb() ==            -> expected continuation " 4821"

Code Llama varies the context length and the key's relative position; here the key is at the
start and the distance is the whole prompt, the variable that matters against the training
length. A prompt counts as retrieved when greedy decoding writes the key's ids exactly
(megacode.eval.lm_scoring.greedy_reproduces: one forward pass per prompt, teacher-forced).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Dict, List, Sequence


@dataclass(frozen=True)
class KeyPrompt:
    distance: int
    """The requested distance in tokens."""
    context: List[int]
    """`<s>` + the prompt's ids."""
    key: List[int]
    """The ids of " <value>" that follow the prompt."""
    tokens_back: int
    """Tokens from the end of the key's `return` line to the end of the prompt (>= distance)."""


def _filler(tok, texts: Sequence[str], rng: random.Random, tokens: int) -> str:
    """Whole texts in a random order, the last one cut at a line, about `tokens` tokens long."""
    order = list(range(len(texts)))
    rng.shuffle(order)
    parts, have = [], 0
    for k in order:
        for line in texts[k].splitlines(keepends=True):
            if have >= tokens:
                return "".join(parts)
            parts.append(line)
            have += len(tok.encode_infill(line))
        parts.append("\n\n")
    if have < tokens:
        raise ValueError(f"the {len(texts)} filler texts hold {have} tokens, fewer than the {tokens} asked for")
    return "".join(parts)


def make_prompts(tok, texts: Sequence[str], distances: Sequence[int], per_distance: int, seed: int,
                 max_tries: int = 20) -> List[KeyPrompt]:
    """`per_distance` prompts for each distance, keys and fillers drawn from `seed`."""
    if tok.bos_id is None:
        raise ValueError(f"{tok.model_path} has no BOS piece")
    rng = random.Random(seed)
    prompts: List[KeyPrompt] = []
    for distance in distances:
        made = 0
        for _ in range(per_distance * max_tries):
            if made == per_distance:
                break
            name = "key_" + "".join(rng.choice(string.ascii_lowercase) for _ in range(6))
            value = rng.randrange(1000, 10000)
            head = f"def {name}():\n    return {value}\n\n\n"
            filler = _filler(tok, texts, rng, int(distance))
            if name in filler:
                continue  # the filler happens to use the name: the key would be ambiguous
            body = head + filler + f"\n\nassert {name}() =="
            ids = [tok.bos_id] + tok.encode(body)
            whole = [tok.bos_id] + tok.encode(body + f" {value}")
            if whole[:len(ids)] != ids:
                continue  # the key's first piece merges with the prompt's end: not a clean continuation
            back = len(ids) - 1 - len(tok.encode(head.rstrip("\n")))
            prompts.append(KeyPrompt(int(distance), ids, whole[len(ids):], back))
            made += 1
        if made < per_distance:
            raise ValueError(f"made only {made} of {per_distance} key prompts at distance {distance}")
    return prompts


def accuracy_by_distance(model, prompts: Sequence[KeyPrompt], max_batch_tokens: int = 16384) -> Dict[int, float]:
    """Share of prompts per distance whose key greedy decoding reproduces."""
    from megacode.eval.lm_scoring import greedy_reproduces

    hits = greedy_reproduces(model, [(p.context, p.key) for p in prompts], max_batch_tokens, desc="key retrieval")
    out: Dict[int, List[bool]] = {}
    for p, hit in zip(prompts, hits):
        out.setdefault(p.distance, []).append(hit)
    return {d: sum(v) / len(v) for d, v in sorted(out.items())}

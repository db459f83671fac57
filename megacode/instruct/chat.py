"""The Llama 2 chat template: a dialog → token ids and a loss mask on the answers.

Code Llama - Instruct is trained on dialogs in the Llama 2 chat format (Code Llama §2.5; DESIGN.md
§1). The exact rules, as in Meta's reference `llama/generation.py` (`chat_completion`):

- roles: an optional `system` message first, then `user` and `assistant` alternating, starting
  with `user`;
- a system message is folded into the first user message:
  `"<<SYS>>\\n" + system + "\\n<</SYS>>\\n\\n" + user` (the system text itself is not stripped);
- every (user, assistant) pair is one turn, encoded as one SentencePiece call with BOS and EOS
  added by id, never as the text "<s>" / "</s>":

      [BOS] enc(f"[INST] {user.strip()} [/INST] {answer.strip()} ") [EOS]

  (note the space before EOS: Meta's string ends with one). A dialog's turns follow each other
  with no separator, each its own `<s>…</s>`.

For training (Llama 2 §3.1, Code Llama §2.5) the loss is on the answers only: the answer's tokens
and the turn's closing EOS get mask 1; BOS, "[INST] ... [/INST]" and the system prompt get 0.
The split point is where the prompt's own encoding `enc(f"[INST] {user} [/INST]")` ends inside
the turn's encoding: SentencePiece starts a new word at the space before the answer, so the prompt
is a token prefix of the turn (checked; a tokenizer where it is not counts the differing tokens
as answer and `RenderedDialog.boundary_mismatch` says so).

A dialog whose last message is from the user has nothing to learn from in that turn; training
data must end with an answer (`DialogError` otherwise), as must every user message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Sequence

import numpy as np

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
SPECIAL_TAGS = (B_INST, E_INST, "<<SYS>>", "<</SYS>>")
ROLES = ("system", "user", "assistant")


class DialogError(ValueError):
    """A dialog cannot be rendered for training; the message says why (the caller adds where)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        """Short stable key for counting rejects ("roles", "special tag", ...)."""


@dataclass
class RenderedDialog:
    tokens: np.ndarray
    """`[n]` int32 ids: the turns' `[BOS] ... [EOS]` runs back to back."""
    loss_mask: np.ndarray
    """`[n]` uint8: 1 on answer tokens and each turn's EOS, 0 elsewhere."""
    turns: int
    boundary_mismatch: int = 0
    """Turns whose prompt encoding was not a token prefix of the turn (0 with SentencePiece BPE)."""

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def _message_text(message, index: int) -> tuple[str, str]:
    if not isinstance(message, Mapping):
        raise DialogError("message", f"message {index} is not an object: {message!r:.80}")
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise DialogError("roles", f"message {index} has role {role!r}; roles are {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise DialogError("message", f"message {index} ({role}) has content {content!r:.80}, not a string")
    return role, content


def turns_of(messages: Sequence) -> List[tuple[str, str]]:
    """(prompt, answer) pairs of a dialog, the system text folded into the first prompt (unstripped
    here; `render` strips as Meta does). Raises DialogError on any rule the format has."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise DialogError("messages", "`messages` must be a non-empty list")
    parsed = [_message_text(m, i) for i, m in enumerate(messages)]
    for index, (role, content) in enumerate(parsed):
        tag = next((t for t in SPECIAL_TAGS if t in content), None)
        if tag is not None:
            raise DialogError("special tag", f"message {index} ({role}) contains the template tag {tag!r}")
        if role != "system" and not content.strip():
            raise DialogError("empty", f"message {index} ({role}) is empty")
    if parsed[0][0] == "system":
        if len(parsed) < 2:
            raise DialogError("roles", "a system message needs a user message after it")
        system = parsed[0][1]
        parsed = [("user", B_SYS + system + E_SYS + parsed[1][1])] + parsed[2:] \
            if parsed[1][0] == "user" else parsed
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(parsed))]
    roles = [role for role, _ in parsed]
    if roles != expected:
        raise DialogError("roles", f"roles {roles} must alternate user/assistant after an optional system "
                                   f"message, starting with user")
    if len(parsed) % 2:
        raise DialogError("unanswered", "the last message is from the user: training dialogs end with an answer")
    return [(parsed[i][1], parsed[i + 1][1]) for i in range(0, len(parsed), 2)]


def turn_texts(prompt: str, answer: str) -> tuple[str, str]:
    """(prompt text, whole-turn text) of one turn, exactly as Meta's chat_completion builds them."""
    head = f"{B_INST} {prompt.strip()} {E_INST}"
    return head, f"{head} {answer.strip()} "


def render(messages: Sequence, tokenizer) -> RenderedDialog:
    """Token ids and loss mask of a training dialog (see the module docstring for the rules).

    `tokenizer` is a `megacode.tokenizer.Tokenizer` (any object with encode(text, bos, eos),
    bos_id and eos_id)."""
    if tokenizer.bos_id is None or tokenizer.eos_id is None:
        raise ValueError(f"{tokenizer!r}: the chat template needs BOS and EOS pieces")
    tokens: List[np.ndarray] = []
    masks: List[np.ndarray] = []
    mismatches = 0
    pairs = turns_of(messages)
    for prompt, answer in pairs:
        head_text, turn_text = turn_texts(prompt, answer)
        turn = np.asarray(tokenizer.encode(turn_text, bos=True, eos=True), dtype=np.int32)  # [BOS] ... [EOS]
        head = np.asarray(tokenizer.encode(head_text, bos=True, eos=False), dtype=np.int32)  # [BOS] [INST] ...
        split = len(head)
        if split >= len(turn) or not np.array_equal(turn[:split], head):
            limit = min(split, len(turn) - 1)
            differ = np.flatnonzero(turn[:limit] != head[:limit])
            split = int(differ[0]) if differ.size else limit
            mismatches += 1
        mask = np.zeros(len(turn), dtype=np.uint8)
        mask[split:] = 1  # the answer, its trailing space and the EOS
        tokens.append(turn)
        masks.append(mask)
    return RenderedDialog(np.concatenate(tokens), np.concatenate(masks), len(pairs), mismatches)


def inference_prompt(messages: Sequence, tokenizer) -> List[int]:
    """Prompt ids for generation: the finished turns, then `[BOS] enc("[INST] {user} [/INST]")` of a
    last, unanswered user message (Meta's chat_completion)."""
    if not messages or messages[-1].get("role") != "user":
        raise DialogError("roles", "an inference dialog ends with a user message")
    history = list(messages[:-1])
    last = messages[-1]["content"]
    if history and history[0].get("role") == "system" and len(history) == 1:
        last = B_SYS + history[0]["content"] + E_SYS + last
        history = []
    ids: List[int] = []
    if history:
        ids = render(history, tokenizer).tokens.tolist()
    head, _ = turn_texts(last, "")
    return ids + tokenizer.encode(head, bos=True, eos=False)

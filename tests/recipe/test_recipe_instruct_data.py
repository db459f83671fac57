"""Instruct data: the Llama 2 chat template against ids built by hand from encode() of the literal
template text, the answer-only loss mask, tools/prepare_instruct.py, and dialog samples through
the ordinary builder blended with full-mask rehearsal data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from megacode.data.builder import build_datasets
from megacode.data.indexed import IndexedDataset, IndexedDatasetError
from megacode.instruct import DialogError, inference_prompt, mask_prefix, render
from megacode.tokenizer import load
from megacode.data.batching import collate

SYSTEM = "You write short Python functions."
USER1, ANSWER1 = "Write hello world in Python.", "print('hello world')"
USER2, ANSWER2 = "  And in C?  ", '  puts("hi");\n'


@pytest.fixture(scope="module")
def tok(recipe_corpus):
    return load(recipe_corpus["model"])


def test_single_turn_with_system_matches_hand_built_ids(tok):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER1},
                {"role": "assistant", "content": ANSWER1}]
    # Meta's layout written out literally: BOS, then one encode of the whole turn text, then EOS.
    text = f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{USER1} [/INST] {ANSWER1} "
    expected = [tok.bos_id] + tok.encode(text) + [tok.eos_id]
    out = render(messages, tok)
    assert out.tokens.tolist() == expected
    assert out.turns == 1 and out.boundary_mismatch == 0
    mask = out.loss_mask.astype(bool)
    assert not mask[0] and mask[-1]  # BOS never a target; the closing EOS is
    assert tok.decode(out.tokens[mask].tolist()) == ANSWER1 + " "  # exactly the answer (+ Meta's trailing space)
    prompt_len = len(tok.encode(f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{USER1} [/INST]")) + 1
    assert mask.tolist() == [False] * prompt_len + [True] * (len(expected) - prompt_len)


def test_multi_turn_each_turn_its_own_bos_eos(tok):
    messages = [{"role": "user", "content": USER1}, {"role": "assistant", "content": ANSWER1},
                {"role": "user", "content": USER2}, {"role": "assistant", "content": ANSWER2}]
    turn1 = [tok.bos_id] + tok.encode(f"[INST] {USER1} [/INST] {ANSWER1} ") + [tok.eos_id]
    turn2 = [tok.bos_id] + tok.encode(f"[INST] {USER2.strip()} [/INST] {ANSWER2.strip()} ") + [tok.eos_id]
    out = render(messages, tok)
    assert out.tokens.tolist() == turn1 + turn2
    assert out.tokens.tolist().count(tok.bos_id) == 2 and out.tokens.tolist().count(tok.eos_id) == 2
    mask = out.loss_mask.astype(bool)
    first, second = mask[:len(turn1)], mask[len(turn1):]
    assert tok.decode(np.asarray(turn1)[first].tolist()) == ANSWER1 + " "
    assert tok.decode(np.asarray(turn2)[second].tolist()) == ANSWER2.strip() + " "
    # No prompt token of either turn is a target: the masked ids are exactly the two answers' ids.
    answers = tok.encode(f"[INST] {USER1} [/INST] {ANSWER1} ")[len(tok.encode(f"[INST] {USER1} [/INST]")):]
    assert out.tokens[:len(turn1)][first].tolist() == answers + [tok.eos_id]


def test_special_text_is_not_special_ids(tok):
    out = render([{"role": "user", "content": "print <s> and </s>"},
                  {"role": "assistant", "content": "done </s>"}], tok)
    assert out.tokens.tolist().count(tok.eos_id) == 1 and out.tokens.tolist().count(tok.bos_id) == 1


@pytest.mark.parametrize("messages,reason", [
    ([{"role": "assistant", "content": "hi"}], "roles"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "roles"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
     "unanswered"),
    ([{"role": "user", "content": "use [INST] here"}, {"role": "assistant", "content": "b"}], "special tag"),
    ([{"role": "user", "content": "   "}, {"role": "assistant", "content": "b"}], "empty"),
    ([{"role": "tool", "content": "a"}], "roles"),
    ([], "messages"),
])
def test_bad_dialogs_are_refused_with_a_reason(tok, messages, reason):
    with pytest.raises(DialogError) as err:
        render(messages, tok)
    assert err.value.reason == reason


def test_inference_prompt_ends_at_inst(tok):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER1}]
    expected = [tok.bos_id] + tok.encode(f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{USER1} [/INST]")
    assert inference_prompt(messages, tok) == expected


def test_prepare_instruct_writes_aligned_datasets_and_counts_rejects(recipe_corpus, tok, tmp_path):
    import subprocess
    import sys

    from tests.recipe.conftest import REPO, make_dialogs

    dialogs = make_dialogs(6, seed=3)
    lines = [json.dumps({"messages": d, "source": "s"}) for d in dialogs]
    lines.insert(2, "{not json")
    lines.insert(4, json.dumps({"messages": [{"role": "user", "content": "unanswered"}]}))
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n\n")
    prefix = tmp_path / "out" / "dialogs"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "prepare_instruct.py"), "--input", str(src),
                           "--tokenizer-model", recipe_corpus["model"], "--output-prefix", str(prefix),
                           "--rejects", str(tmp_path / "rejects.jsonl")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "6 dialogs" in proc.stdout and "2 rejected" in proc.stdout
    ids, mask = IndexedDataset(str(prefix)), IndexedDataset(mask_prefix(str(prefix)))
    assert mask.dtype == np.uint8 and len(ids) == len(mask) == 6
    for k, d in enumerate(dialogs):
        want = render(d, tok)
        assert ids[k].tolist() == want.tokens.tolist() and mask[k].tolist() == want.loss_mask.tolist()
    rejects = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [(3, "json"), (5, "unanswered")]
    summary = json.loads((tmp_path / "out" / "dialogs.instruct.json").read_text())
    assert summary["dialogs"] == 6 and summary["answer_tokens"] == int(sum(m.sum() for m in mask[:]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "prepare_instruct.py"), "--input", str(empty),
                           "--tokenizer-model", recipe_corpus["model"], "--output-prefix", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no usable dialog" in proc.stderr
    assert not (tmp_path / "none.idx").exists() and not (tmp_path / "none_lossmask.idx").exists()


def _data_cfg(corpus, paths, seq=64):
    return SimpleNamespace(paths=paths, valid_paths=[], split="100,0", seq_length=seq, cache_dir=corpus["cache"])


def test_dialog_samples_blend_with_full_mask_rehearsal(recipe_corpus, tok):
    corpus = recipe_corpus
    cfg = _data_cfg(corpus, [{"path": corpus["instruct"], "weight": 0.92, "kind": "dialog"},
                             {"path": corpus["code"], "weight": 0.06}, {"path": corpus["nl"], "weight": 0.02}])
    train, _ = build_datasets(cfg, seed=4, num_train_samples=100, num_valid_samples=0)
    rendered = {}
    ids = IndexedDataset(corpus["instruct"])
    mask_ds = IndexedDataset(mask_prefix(corpus["instruct"]))
    sources = [train.source(i)[0] for i in range(len(train))]
    assert sources.count(0) == 92 and sources.count(1) == 6 and sources.count(2) == 2
    for i in range(len(train)):
        sample = train[i]
        if sources[i] != 0:
            assert not isinstance(sample, dict)  # rehearsal: plain tokens, full mask
            continue
        assert sample["tokens"].shape == sample["loss_mask"].shape == (65,)
        # Tokens and mask come from the same spans: rebuild both from the documents' own files.
        spans = train.pieces(i)
        assert sample["tokens"].tolist() == np.concatenate([ids.get(d, s, e - s) for d, s, e in spans]).tolist()
        assert sample["loss_mask"].tolist() == np.concatenate([mask_ds.get(d, s, e - s) for d, s, e in spans]).tolist()
        for d, _, _ in spans:
            rendered.setdefault(d, None)
    assert len(rendered) > 10
    batch = collate([train[i] for i in range(8)])
    for row, src in enumerate(sources[:8]):
        if src != 0:
            assert batch["loss_mask"][row].eq(1).all()
            continue
        # The label at t is token t+1 and is a target iff token t+1 is an answer token or a turn's EOS.
        labels = batch["labels"][row][batch["loss_mask"][row].bool()].tolist()
        assert tok.bos_id not in labels and labels.count(tok.eos_id) == int((batch["labels"][row] == tok.eos_id).sum())
        assert "[INST]" not in tok.decode(labels) and "def " in tok.decode(labels)


def test_dialog_entry_errors_name_the_problem(recipe_corpus, tmp_path):
    corpus = recipe_corpus
    with pytest.raises(ValueError, match="kind must be one of text, dialog, got 'chat'"):
        build_datasets(_data_cfg(corpus, [{"path": corpus["instruct"], "kind": "chat"}]), 1, 10, 0)
    with pytest.raises(IndexedDatasetError, match="_lossmask"):
        build_datasets(_data_cfg(corpus, [{"path": corpus["code"], "kind": "dialog"}]), 1, 10, 0)

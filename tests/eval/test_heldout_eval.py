"""Held-out evaluation pieces of tools/reproduce.py: losses by span and context length
(megacode.eval.lm_scoring), whole-line infilling cases (megacode.eval.heldout_infill) and key
retrieval prompts (megacode.eval.key_retrieval), on a tiny random transformers Llama with a
Code Llama tokenizer trained here."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))


@pytest.fixture(scope="module")
def tok_and_model(tmp_path_factory):
    import torch
    from spm_fixtures import stdlib_texts, train_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from megacode.tokenizer import build_codellama_tokenizer, load

    lines = [ln for text in stdlib_texts(200_000) for ln in text.splitlines() if ln.strip()]
    rng = random.Random(2)  # "☺" alone, as in Llama 2 (enc' relies on it); as tests/eval/test_infilling_eval.py
    lines += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz(){}[]:;.,") + "☺" for _ in range(40)) for _ in range(60)]
    base = train_model(lines, 496)
    tok = load(build_codellama_tokenizer(base, tmp_path_factory.mktemp("tok") / "tokenizer.model",
                                         allow_non_llama_base=True))
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    torch.manual_seed(0)
    return tok, LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def texts():
    from spm_fixtures import stdlib_texts

    return [t for t in stdlib_texts(300_000) if 200 < len(t) < 6000]


def _plain_losses(model, ids):
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none").numpy()


def test_batched_losses_equal_one_sequence_at_a_time(tok_and_model):
    from megacode.eval.lm_scoring import span_losses, token_losses

    tok, model = tok_and_model
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, tok.vocab_size, size=n).tolist() for n in (5, 40, 17, 40, 2, 90)]
    batched = token_losses(model, seqs, max_batch_tokens=100)  # several batches, right-padded
    for ids, got in zip(seqs, batched):
        assert got.shape == (len(ids) - 1,)
        np.testing.assert_allclose(got, _plain_losses(model, ids), rtol=1e-4, atol=1e-5)
    spans = span_losses(model, [(seqs[1][:10], seqs[1][10:]), (seqs[0][:1], seqs[0][1:])])
    np.testing.assert_allclose(spans[0], batched[1][9:], rtol=1e-5)
    np.testing.assert_allclose(spans[1], batched[0], rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        token_losses(model, [[1]])


def test_loss_by_context_length_scores_the_same_tokens(tok_and_model):
    from megacode.eval.lm_scoring import context_windows, loss_by_context_length

    tok, model = tok_and_model
    doc = np.random.default_rng(1).integers(3, tok.vocab_size, size=70)
    windows = context_windows(doc, 16, 64)
    assert [len(w) for w in windows] == [17] * 4
    labels = np.concatenate([w[1:] for w in windows])
    np.testing.assert_array_equal(labels, doc[1:65])  # each of tokens 1..64 predicted exactly once
    by_length = loss_by_context_length(model, [doc, doc[::-1].copy()], [16, 64], span=64)
    whole = np.concatenate([_plain_losses(model, d[:65].tolist()) for d in (doc, doc[::-1])]).mean()
    assert by_length[64] == pytest.approx(whole, rel=1e-5)
    assert by_length[16] != pytest.approx(by_length[64], rel=1e-6)  # other contexts, other losses
    with pytest.raises(ValueError, match="not a multiple"):
        context_windows(doc, 24, 64)
    with pytest.raises(ValueError, match="shorter"):
        context_windows(doc, 16, 80)


def test_greedy_reproduces_what_greedy_decoding_writes(tok_and_model):
    import torch

    from megacode.eval.lm_scoring import greedy_reproduces

    tok, model = tok_and_model
    context = [tok.bos_id] + tok.encode("def add(a, b):\n    return")
    with torch.no_grad():
        out = model.generate(torch.tensor([context]), max_new_tokens=5, do_sample=False, pad_token_id=0)
    written = out[0, len(context):].tolist()
    other = written[:2] + [(written[2] + 1) % tok.vocab_size] + written[3:]
    assert greedy_reproduces(model, [(context, written), (context, other), (context[:4], written)])[:2] == [True, False]


def test_infill_cases_are_aligned_whole_lines_and_match_the_training_layout(tok_and_model, texts):
    from megacode.eval import heldout_infill as hi

    tok, _ = tok_and_model
    cases = hi.make_cases(tok, texts, 60, 1, 5, seed=3)
    assert len(cases) == 60
    assert cases == hi.make_cases(tok, texts, 60, 1, 5, seed=3)  # deterministic from the seed
    for case in cases:
        assert case.prefix + case.middle + case.suffix == texts[case.document]
        assert case.middle.endswith("\n") and 1 <= case.lines <= 5
        assert case.prefix == "" or case.prefix.endswith("\n")
        assert hi.aligned(tok, case.prefix, case.middle)
        # what the C++ transform trains on is exactly the inference prompt + middle + <EOT>
        assert hi.training_layout_matches(tok, case, spm=False) and hi.training_layout_matches(tok, case, spm=True)
    middle = tok.encode_infill(cases[0].middle)
    for layout in hi.LAYOUTS:  # one target, three contexts
        (context, target), = hi.loss_pairs(tok, cases[:1], layout)
        assert target == middle and context[0] == tok.bos_id
    assert hi.loss_pairs(tok, cases[:1], "l2r")[0][0] == [tok.bos_id] + tok.encode(cases[0].prefix)
    single = hi.make_cases(tok, texts, 20, 1, 1, seed=4)
    assert all(c.lines == 1 and any(ch.isalnum() for ch in c.middle) for c in single)


def test_exact_match_rules():
    from megacode.eval.heldout_infill import InfillCase, exact_match, first_lines

    case = InfillCase(0, "def f(x):\n", "    y = x + 1\n    return y\n", "\nprint(f(1))\n")
    assert exact_match("    y = x + 1  \n    return y", case)  # trailing spaces and newline do not count
    assert exact_match("    y = x + 1\n    return y\n\n\n", case)
    assert not exact_match("    y = x + 1\n", case)
    assert not exact_match("  y = x + 1\n    return y\n", case)  # indentation does
    assert first_lines("a\nb\nc\n", 2) == "a\nb\n" and first_lines("a", 3) == "a"
    assert case.lines == 2


def test_generation_modes_cut_where_the_docstring_says(tok_and_model, tmp_path):
    from megacode.eval import heldout_infill as hi
    from megacode.eval.generate import GenerationSettings
    from megacode.eval.infilling import InfillGenerator

    tok, model = tok_and_model
    model.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(Path(tok.model_path).read_bytes())
    gen = InfillGenerator(tmp_path, GenerationSettings(dtype="float32", device="cpu", max_new_tokens=12))
    case = hi.InfillCase(0, "def f(x):\n", "    y = 1\n    return y\n", "\n")
    (l2r,) = hi.generate_middles(gen, tok, [case], "l2r", cap=40)
    assert l2r.count("\n") <= case.lines and l2r == hi.first_lines(l2r, case.lines)
    budgets = []
    real = gen.middle
    gen.middle = lambda *args, **kw: budgets.append(kw["max_new_tokens"]) or real(*args, **kw)  # a spy
    for layout in ("psm", "spm"):
        (middle,) = hi.generate_middles(gen, tok, [case], layout, cap=6)
        assert isinstance(middle, str) and "<EOT>" not in middle
    long = hi.InfillCase(0, "x = 1\n", "y = 2\n", "")
    hi.generate_middles(gen, tok, [long], "psm", cap=100)
    assert budgets == [6, 6, 2 * len(tok.encode_infill(long.middle)) + 8]


def test_key_prompts_put_the_key_at_the_distance(tok_and_model, texts):
    from megacode.eval.key_retrieval import accuracy_by_distance, make_prompts

    tok, model = tok_and_model
    prompts = make_prompts(tok, texts, [32, 120], per_distance=3, seed=5)
    assert [p.distance for p in prompts] == [32] * 3 + [120] * 3
    for p in prompts:
        text = tok.decode(p.context[1:])
        name = text.split("def ", 1)[1].split("(", 1)[0]
        value = text.split("return ", 1)[1].split("\n", 1)[0]
        assert text.rstrip().endswith(f"assert {name}() ==")
        assert tok.decode_infill(p.key) == f" {value}"
        assert p.distance <= p.tokens_back <= p.distance + 80
    acc = accuracy_by_distance(model, prompts)
    assert sorted(acc) == [32, 120] and all(0 <= v <= 1 for v in acc.values())


def test_other_suffixes_and_eot_pairs(tok_and_model, texts):
    from megacode.eval import heldout_infill as hi

    tok, _ = tok_and_model
    cases = hi.make_cases(tok, texts, 12, 1, 3, seed=6)
    other = hi.with_other_suffixes(cases, seed=1)
    assert [(c.prefix, c.middle) for c in other] == [(c.prefix, c.middle) for c in cases]
    assert sorted(c.suffix for c in other) == sorted(c.suffix for c in cases)  # a permutation...
    assert all(o.suffix != c.suffix for o, c in zip(other, cases) if sum(x.suffix == c.suffix for x in cases) == 1)
    (context, target), = hi.eot_pairs(tok, cases[:1], "spm")
    assert target == [tok.eot_id] and context == hi.context_ids(tok, cases[0], "spm") + tok.encode_infill(cases[0].middle)


def test_copy_probe_separates_a_copying_model_from_one_that_cannot(tok_and_model):
    import torch

    from megacode.eval.induction import copy_probe, plain_pieces, repeated_sequences

    tok, model = tok_and_model
    seqs = repeated_sequences(tok, 4, 16, seed=0)
    assert all(len(s) == 33 and s[0] == tok.bos_id and s[1:17] == s[17:] for s in seqs)
    pieces = set(plain_pieces(tok))
    assert tok.eot_id not in pieces and tok.bos_id not in pieces and all(i in pieces for s in seqs for i in s[1:])
    random_model = copy_probe(model, seqs, 16)
    assert abs(random_model["gain"]) < 0.5  # random weights: the repeat is as unpredictable as the run

    class Copier(torch.nn.Module):
        """A model that predicts the token 16 back (what an induction head does on these sequences)."""

        def forward(self, input_ids):
            logits = torch.full((*input_ids.shape, tok.vocab_size), -10.0)
            logits[:, 15:, :].scatter_(2, input_ids[:, :-15, None], 10.0)
            return type("Out", (), {"logits": logits})()

    copier = copy_probe(Copier(), seqs, 16)
    assert copier["repeat"] < 0.01 and copier["gain"] > 5

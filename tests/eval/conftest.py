"""Fixtures for tests/eval: tiny random Hugging Face causal LMs built locally (no hub access).

The tokenizer is a byte-level BPE trained here on generated Python-like text with the
`tokenizers` library; the model is a 2-layer `LlamaForCausalLM` with random weights. Both are
saved as an ordinary HF directory, so the code under test loads them with `from_pretrained`
exactly as it would load Code Llama.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest


def _corpus(seed: int, lines: int = 400) -> list[str]:
    rng = random.Random(seed)
    words = ["def", "return", "for", "in", "if", "else", "while", "list", "sum", "len", "range", "x", "y",
             "value", "items", "result", "assert", "print", "[INST]", "[/INST]", "[TESTS]", "[PYTHON]"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice(["", ":", "()", " == 1"])
            for _ in range(lines)]


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_corpus(seed), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


# What the trained model learns to answer: two questions, tests for add(), and a solution that is
# right or wrong with about equal odds (two answers trained on the same prompt), so sampled
# solutions hold both and the pipeline's selection has something to select.
TRAINED_QUESTIONS = ("Write a function add(a, b) that returns a + b.", "Write a function twice(x) that returns 2 * x.")
TRAINED_TESTS = "[TESTS]\n# Test case 1:\nassert add(1, 2) == 3\n# Test case 2:\nassert add(2, 2) == 4\n[/TESTS]"
TRAINED_SOLUTIONS = ("[PYTHON]\ndef add(a, b):\n    return a + b\n[/PYTHON]",
                     "[PYTHON]\ndef add(a, b):\n    return a - b\n[/PYTHON]")


def build_trained_selfinstruct_model(directory: Path, steps: int = 120) -> Path:
    """A tiny Llama trained for a few seconds on the self-instruct prompts until it answers them
    in their formats: real generation whose output the pipeline can parse, test and select."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from megacode.selfinstruct import prompts

    first_test = "assert add(1, 2) == 3"
    texts = [prompts.questions_prompt(3) + "".join(f"{i}. {q}\n" for i, q in enumerate(TRAINED_QUESTIONS, 1))]
    for question in TRAINED_QUESTIONS:
        texts.append(prompts.tests_prompt(question, 3) + TRAINED_TESTS)
        texts += [prompts.solution_prompt(question, first_test) + answer for answer in TRAINED_SOLUTIONS]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts * 3, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id))
    batch = fast([t + "</s>" for t in texts], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3, f"tiny self-instruct model did not learn its answers (loss {loss.item():.3f})"
    model.eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def trained_selfinstruct_model_dir(tmp_path_factory) -> Path:
    return build_trained_selfinstruct_model(tmp_path_factory.mktemp("tiny-llama-selfinstruct"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-a"), seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory) -> Path:
    """A second, differently seeded model: self-instruct uses one model for questions and
    another for tests and solutions."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-b"), seed=1)

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-a"), seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory) -> Path:
    """A second, differently seeded model: self-instruct uses one model for questions and
    another for tests and solutions."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-b"), seed=1)

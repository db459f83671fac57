"""What the CPU quickstart chain needs that no other tool makes: a small local corpus, a few
dialogs, a tiny random "Llama 2" in Hugging Face format, and the final infilling demo.

    python tools/quickstart_assets.py corpus  --out DIR            # code / code_nl / nl / python JSONL
    python tools/quickstart_assets.py tokenizer --corpus DIR --out FILE [--vocab 496]
    python tools/quickstart_assets.py dialogs --out FILE           # instruct dialogs (JSONL)
    python tools/quickstart_assets.py tiny-hf --tokenizer-model M --out DIR
    python tools/quickstart_assets.py infill  --model HF_DIR [--spm]

Everything comes from files already on the machine (the Python standard library's sources and
their docstrings, the system's license texts); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import sysconfig
from pathlib import Path

MAX_FILE_BYTES = 60_000


def _stdlib_sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py"))
             if "test" not in p.parts and "site-packages" not in p.parts and p.stat().st_size < MAX_FILE_BYTES]
    return files


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    return [doc for doc in (ast.get_docstring(n) for n in nodes) if doc and len(doc) > 80]


def _write_jsonl(path: Path, texts: list[str]) -> int:
    with open(path, "w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return len(texts)


def make_corpus(out: Path, files: int) -> None:
    """The stage-1 and stage-2 mixes' sources: code, natural language about code, natural
    language, Python. Odd/even files split code from Python so the two sets differ."""
    out.mkdir(parents=True, exist_ok=True)
    sources = _stdlib_sources()[:files]
    texts = [(p, p.read_text(encoding="utf-8", errors="replace")) for p in sources]
    python = [t for i, (_, t) in enumerate(texts) if i % 2 == 0]
    code = [t for i, (_, t) in enumerate(texts) if i % 2 == 1]
    include = Path(sysconfig.get_paths()["include"])
    code += [p.read_text(errors="replace") for p in sorted(include.glob("*.h"))[:40] if p.stat().st_size < MAX_FILE_BYTES]
    code_nl = [doc for _, t in texts for doc in _docstrings(t)]
    licenses = sorted(Path("/usr/share/common-licenses").glob("*"))
    nl = [p.read_text(errors="replace") for p in licenses if p.is_file() and p.stat().st_size < 200_000]
    nl = nl or code_nl[::3]  # machines without license texts fall back to prose docstrings
    counts = {name: _write_jsonl(out / f"{name}.jsonl", docs)
              for name, docs in (("code", code), ("code_nl", code_nl), ("nl", nl), ("python", python))}
    print(f"corpus in {out}: " + ", ".join(f"{k} {v} documents" for k, v in counts.items()))


def train_tokenizer(corpus: Path, out: Path, vocab: int) -> None:
    """A Llama 2-style BPE (byte fallback, identity normalisation) on the corpus's paragraphs."""
    from megacode.tokenizer.train import train_llama_like

    paragraphs = []
    for path in sorted(corpus.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["text"]
            paragraphs += [p for p in text.split("\n\n") if p.strip()][:200]
    train_llama_like([p[:4000] for p in paragraphs], vocab, out)
    print(f"tokenizer: {out} ({vocab} pieces, trained on {len(paragraphs)} paragraphs)")


TASKS = [
    ("add two numbers", "def add(a, b):\n    return a + b"),
    ("reverse a string", "def reverse(s):\n    return s[::-1]"),
    ("check whether a number is even", "def is_even(n):\n    return n % 2 == 0"),
    ("return the largest item of a list", "def largest(items):\n    return max(items)"),
    ("count the vowels in a string", "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s.lower())"),
    ("compute a factorial", "def factorial(n):\n    return 1 if n < 2 else n * factorial(n - 1)"),
    ("square every number in a list", "def squares(xs):\n    return [x * x for x in xs]"),
    ("join words with spaces", "def join_words(words):\n    return ' '.join(words)"),
]


def make_dialogs(out: Path) -> None:
    """A few single- and multi-turn dialogs in the dialog JSONL format the instruct stage reads."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as handle:
        for repeat in range(3):
            for task, code in TASKS:
                messages = [{"role": "user", "content": f"Write a Python function to {task}."},
                            {"role": "assistant", "content": f"[PYTHON]\n{code}\n[/PYTHON]"}]
                if repeat == 1:
                    messages.insert(0, {"role": "system", "content": "Answer with code only."})
                if repeat == 2:
                    messages += [{"role": "user", "content": "Add a docstring."},
                                 {"role": "assistant", "content": f"[PYTHON]\n{code.replace(':', ':  # ' + task, 1)}\n[/PYTHON]"}]
                handle.write(json.dumps({"messages": messages, "source": "quickstart"}) + "\n")
    print(f"dialogs: {out} ({3 * len(TASKS)} dialogs)")


def make_tiny_hf(tokenizer_model: Path, out: Path) -> None:
    """A random LlamaForCausalLM with the `tiny` flavor's shape and the base tokenizer's vocabulary
    (the import grows it by the 16 Code Llama pieces, as from Llama 2's 32,000 to 32,016)."""
    import shutil

    import sentencepiece as spm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from megacode.config import get_flavor

    flavor = get_flavor("tiny")
    vocab = spm.SentencePieceProcessor(model_file=str(tokenizer_model)).get_piece_size()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=flavor.hidden_size, intermediate_size=flavor.ffn_hidden_size,
                         num_hidden_layers=flavor.num_layers, num_attention_heads=flavor.num_attention_heads,
                         num_key_value_heads=flavor.num_query_groups, max_position_embeddings=flavor.max_position_embeddings,
                         rms_norm_eps=flavor.norm_epsilon, rope_theta=flavor.rope_base, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(out)
    shutil.copy(tokenizer_model, out / "tokenizer.model")
    print(f"tiny Llama 2-style model: {out} (vocab {vocab})")


def infill_demo(model_dir: Path, spm_layout: bool, max_new_tokens: int) -> None:
    """Load the export with transformers and fill in the middle of a function."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megacode.data.fim import infill_prompt, infill_text
    from megacode.tokenizer import load

    AutoTokenizer.from_pretrained(model_dir)  # the export's tokenizer files load too
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = load(model_dir / "tokenizer.model")
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    prompt = infill_prompt(tok, prefix, suffix, spm_layout)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=[tok.eot_id, tok.eos_id], pad_token_id=tok.eos_id)
    middle = infill_text(tok, out[0, len(prompt):].tolist())
    print(f"infilling ({'SPM' if spm_layout else 'PSM'}) with {model_dir}:")
    print(f"{prefix}\u27e6{middle}\u27e7{suffix}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    corpus = sub.add_parser("corpus")
    corpus.add_argument("--out", type=Path, required=True)
    corpus.add_argument("--files", type=int, default=400, help="standard-library files to use")
    tokenizer = sub.add_parser("tokenizer")
    tokenizer.add_argument("--corpus", type=Path, required=True)
    tokenizer.add_argument("--out", type=Path, required=True)
    tokenizer.add_argument("--vocab", type=int, default=496)
    dialogs = sub.add_parser("dialogs")
    dialogs.add_argument("--out", type=Path, required=True)
    tiny = sub.add_parser("tiny-hf")
    tiny.add_argument("--tokenizer-model", type=Path, required=True)
    tiny.add_argument("--out", type=Path, required=True)
    infill = sub.add_parser("infill")
    infill.add_argument("--model", type=Path, required=True)
    infill.add_argument("--spm", action="store_true")
    infill.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args(argv)
    if args.command == "corpus":
        make_corpus(args.out, args.files)
    elif args.command == "tokenizer":
        train_tokenizer(args.corpus, args.out, args.vocab)
    elif args.command == "dialogs":
        make_dialogs(args.out)
    elif args.command == "tiny-hf":
        make_tiny_hf(args.tokenizer_model, args.out)
    else:
        infill_demo(args.model, args.spm, args.max_new_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Corpus, tokenizer and indexed datasets of an experiment, built once and cached.

    assets = prepare(cfg, cache_dir, log)       # Assets: tokenizer path, dataset prefixes, texts

Under `cache_dir` (both experiments and repeated runs share what their configs share):

    corpus-<key>/   {train,heldout}_{files,chunks}.jsonl   {"text", "path"} per document
                    corpus.json                            fingerprint (files, bytes, digest)
    tokenizer-<key>/ base.model                            BPE of vocab_size - 16 pieces
                    tokenizer.model                        + Code Llama's 16 pieces
    data-<key>/     {train,heldout}_{files,chunks}_text_document.{bin,idx}

Keys hash everything an entry depends on (the corpus key includes the chosen files' digest), and
every entry is built in a temporary directory that is renamed into place when complete.

Documents are stored as megacode's preprocessing writes them with `--prepend-bos --append-eod`:
`<s> text </s>`. The BOS makes the inference prompts of Code Llama (`<s> <PRE> ...`, megacode.data.fim)
and a left-to-right prompt (`<s> prefix`) look like the training data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List

from megacode.experiments.config import ExperimentConfig
from megacode.experiments.corpus import SIDES, chunk_source, fingerprint, read_source, select_files

VIEWS = ("files", "chunks")
"""`files`: one document per source file (long-context data); `chunks`: top-level blocks (FIM data)."""
INFILL_PIECES = 16


@dataclass
class Assets:
    tokenizer_model: str
    datasets: Dict[str, str]
    """`{side}_{view}` -> indexed dataset prefix."""
    texts: Dict[str, str]
    """`{side}_{view}` -> JSONL of the documents' texts, in dataset order."""
    corpus: dict
    """The fingerprint of the chosen files."""

    def documents(self, name: str) -> List[str]:
        with open(self.texts[name], encoding="utf-8") as handle:
            return [json.loads(line)["text"] for line in handle]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _build(final: Path, make: Callable[[Path], None]) -> Path:
    """`make(tmp)` then rename tmp to `final`; an existing `final` is reused as it is."""
    if final.is_dir():
        return final
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    make(tmp)
    os.replace(tmp, final)
    return final


def _write_corpus(cfg: ExperimentConfig, files, out: Path) -> None:
    for side in SIDES:
        with open(out / f"{side}_files.jsonl", "w", encoding="utf-8") as whole, \
                open(out / f"{side}_chunks.jsonl", "w", encoding="utf-8") as chunks:
            for f in files[side]:
                text = read_source(f, cfg.corpus)
                name = f"{f.source}/{f.relpath}"
                whole.write(json.dumps({"text": text, "path": name}, ensure_ascii=False) + "\n")
                for piece in chunk_source(text, cfg.corpus.chunk_chars, cfg.corpus.max_chunk_chars):
                    if piece.strip():
                        chunks.write(json.dumps({"text": piece, "path": name}, ensure_ascii=False) + "\n")
    (out / "corpus.json").write_text(json.dumps(fingerprint(files), indent=2) + "\n")


def _paragraphs(jsonl: Path, budget: int) -> List[str]:
    """Paragraphs (blank-line separated, at most 4,000 characters) of the first documents, up to
    `budget` characters: SentencePiece's training sentences."""
    out, used = [], 0
    with open(jsonl, encoding="utf-8") as handle:
        for line in handle:
            for para in json.loads(line)["text"].split("\n\n"):
                if para.strip():
                    out.append(para[:4000])
                    used += len(out[-1])
            if used >= budget:
                break
    return out


def _train_tokenizer(cfg: ExperimentConfig, corpus_dir: Path, out: Path) -> None:
    from megacode.tokenizer import build_codellama_tokenizer
    from megacode.tokenizer.train import train_llama_like

    sentences = _paragraphs(corpus_dir / "train_files.jsonl", cfg.tokenizer.sample_bytes)
    # a fixed thread count: SentencePiece's trainer is deterministic for a given input and count
    train_llama_like(sentences, cfg.tokenizer.vocab_size - INFILL_PIECES, out / "base.model", num_threads=2)
    build_codellama_tokenizer(out / "base.model", out / "tokenizer.model", allow_non_llama_base=True)


def _preprocess(corpus_dir: Path, tokenizer_model: Path, workers: int, out: Path) -> None:
    from megacode.data.preprocess import PreprocessConfig, preprocess

    for side in SIDES:
        for view in VIEWS:
            name = f"{side}_{view}"
            source = corpus_dir / f"{name}.jsonl"
            summary = preprocess(PreprocessConfig([str(source)], str(out / name), str(tokenizer_model),
                                                  append_eod=True, prepend_bos=True, workers=workers,
                                                  progress=False, meta_keys=("path",)))
            with open(source, encoding="utf-8") as handle:
                lines = sum(1 for _ in handle)
            if summary.documents != lines or sum(summary.rejected.values()):
                raise RuntimeError(f"{source}: preprocessing kept {summary.documents} of {lines} documents "
                                   f"(rejected: {dict(summary.rejected)}); the texts would not match the dataset")


def prepare(cfg: ExperimentConfig, cache_dir: str | Path, log: Callable[[str], None] = print) -> Assets:
    """The experiment's assets, from the cache when it has them."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    files = select_files(cfg.corpus, cfg.seed)
    corpus_key = _key(asdict(cfg.corpus), cfg.seed, fingerprint(files)["sha256"])
    corpus_dir = cache / f"corpus-{corpus_key}"
    if not corpus_dir.is_dir():
        log(f"corpus: writing {sum(map(len, files.values()))} files to {corpus_dir}")
    _build(corpus_dir, lambda tmp: _write_corpus(cfg, files, tmp))
    corpus = json.loads((corpus_dir / "corpus.json").read_text())
    log(f"corpus: {corpus['files']['train']} train files ({corpus['bytes']['train'] / 1e6:.1f} MB), "
        f"{corpus['files']['heldout']} held-out ({corpus['bytes']['heldout'] / 1e6:.1f} MB) [{corpus_dir.name}]")

    tok_dir = cache / f"tokenizer-{_key(corpus_key, asdict(cfg.tokenizer))}"
    if not tok_dir.is_dir():
        log(f"tokenizer: training a {cfg.tokenizer.vocab_size - INFILL_PIECES}-piece BPE + {INFILL_PIECES} "
            f"Code Llama pieces")
    _build(tok_dir, lambda tmp: _train_tokenizer(cfg, corpus_dir, tmp))
    tokenizer_model = tok_dir / "tokenizer.model"

    data_dir = cache / f"data-{_key(tok_dir.name, 'bos-eos')}"
    if not data_dir.is_dir():
        log("datasets: preprocessing with megacode.data.preprocess (BOS + EOS around each document)")
    _build(data_dir, lambda tmp: _preprocess(corpus_dir, tokenizer_model, cfg.eval_threads, tmp))
    names = [f"{side}_{view}" for side in SIDES for view in VIEWS]
    log(f"assets ready in {time.monotonic() - start:.1f} s: {tokenizer_model}, {data_dir}")
    return Assets(str(tokenizer_model), {n: str(data_dir / f"{n}_text_document") for n in names},
                  {n: str(corpus_dir / f"{n}.jsonl") for n in names}, corpus)

"""tools/preprocess_data.py: kept/rejected counts, ids, compression, source trees, Megatron bytes,
worker-count invariance and crash safety."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import zstandard

sys.path.insert(0, str(Path(__file__).parent))
from spm_fixtures import multilingual_texts, stdlib_texts, tiny_model  # noqa: E402

from megacode.data.preprocess import PreprocessConfig, preprocess  # noqa: E402
from megacode.data.preprocess import worker as worker_module  # noqa: E402
from megacode.data.indexed import IndexedDatasetWriter  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "preprocess_data.py"

# Planted bad lines: (raw line bytes, reason). Their line numbers are recorded when written.
BAD_LINES = [
    (b"{not json", "bad_json"),
    (b'{"text": "unterminated', "bad_json"),
    (b"", "blank_line"),
    (b"   \t", "blank_line"),
    (b'{"content": "no text key"}', "missing_key"),
    (b'{"text": ["a", "list"]}', "not_string"),
    (b'{"text": ""}', "empty"),
    (b'[1, 2, 3]', "not_object"),
    (b'{"text": "caf\xe9 latin-1"}', "not_utf8"),
    (b'{"text": "lone \\udc80 surrogate"}', "not_utf8"),
]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def sp(model):
    return spm.SentencePieceProcessor(model_file=str(model))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """mixed.jsonl (+ .gz, .zst): good documents with BAD_LINES spread through them."""
    d = tmp_path_factory.mktemp("corpus")
    texts = stdlib_texts(1_200_000) + multilingual_texts(150, seed=21) + ["x" * 300_000]  # one line > a chunk
    lines, bad_at = [], {}
    step = len(texts) // len(BAD_LINES)
    for i, text in enumerate(texts):
        lines.append(json.dumps({"text": text, "lang": "python" if i % 2 else "text", "n": i}).encode())
        if i % step == step - 1 and len(bad_at) < len(BAD_LINES):
            raw, reason = BAD_LINES[len(bad_at)]
            lines.append(raw)
            bad_at[len(lines)] = reason  # 1-based line number
    data = b"\n".join(lines) + b"\n"
    (d / "mixed.jsonl").write_bytes(data)
    (d / "mixed.jsonl.gz").write_bytes(gzip.compress(data))
    (d / "mixed.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    clean = b"\n".join(json.dumps({"text": t}).encode() for t in texts[:400]) + b"\n"
    (d / "clean.jsonl").write_bytes(clean)
    return {"dir": d, "texts": texts, "bad_at": bad_at}


def run(tmp_path, inputs, model, name="out", **kw):
    cfg = PreprocessConfig(inputs=[str(i) for i in inputs], output_prefix=str(tmp_path / name),
                           tokenizer_model=str(model), progress=False, chunk_bytes=kw.pop("chunk_bytes", 64 << 10), **kw)
    return preprocess(cfg), tmp_path / f"{name}_text_document"


def read_docs(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset  # Megatron-Core's own reader

    ds = IndexedDataset(str(prefix))
    return [ds[i].tolist() for i in range(len(ds))]


def files_of(prefix):
    return Path(str(prefix) + ".bin").read_bytes(), Path(str(prefix) + ".idx").read_bytes()


def test_mixed_corpus_counts_ids_and_rejects(tmp_path, corpus, model, sp):
    rejects = tmp_path / "rejects.jsonl"
    summary, prefix = run(tmp_path, [corpus["dir"] / "mixed.jsonl"], model, append_eod=True,
                          rejects_path=str(rejects), meta_keys=("lang", "n"))
    texts, bad_at = corpus["texts"], corpus["bad_at"]
    assert summary.documents == len(texts)
    expected = {}
    for reason in bad_at.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(summary.rejected) == expected
    docs = read_docs(prefix)
    assert len(docs) == len(texts)
    for text, ids in zip(texts, docs):
        assert ids == sp.encode(text) + [sp.eos_id()]
    assert summary.tokens == sum(map(len, docs))
    recs = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert {r["line"]: r["reason"] for r in recs} == bad_at
    assert all(r["file"] == str(corpus["dir"] / "mixed.jsonl") for r in recs)
    meta = [json.loads(line) for line in Path(str(prefix) + ".meta.jsonl").read_text().splitlines()]
    assert [m["n"] for m in meta] == list(range(len(texts)))
    assert sorted(os.listdir(tmp_path)) == ["out_text_document.bin", "out_text_document.idx",
                                            "out_text_document.meta.jsonl", "rejects.jsonl"]


def test_gz_and_zst_give_identical_datasets(tmp_path, corpus, model):
    outs = []
    for name in ("mixed.jsonl", "mixed.jsonl.gz", "mixed.jsonl.zst"):
        summary, prefix = run(tmp_path, [corpus["dir"] / name], model, name=name.replace(".", "_"), append_eod=True)
        outs.append((files_of(prefix), summary.documents, dict(summary.rejected)))
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.parametrize("bos", [False, True])
def test_same_bytes_as_megatron_baseline(tmp_path, corpus, model, sp, bos):
    """Megatron-LM's preprocess_data.py path: SentencePiece ids (+BOS for the older Llama2Tokenizer)
    plus EOS, into Megatron-Core's IndexedDatasetBuilder with its dtype rule."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    base = tmp_path / "megatron_text_document"
    builder = IndexedDatasetBuilder(str(base) + ".bin", dtype=DType.optimal_dtype(sp.vocab_size()))
    with open(corpus["dir"] / "clean.jsonl", encoding="utf-8") as f:
        for line in f:
            ids = ([sp.bos_id()] if bos else []) + sp.encode(json.loads(line)["text"]) + [sp.eos_id()]
            builder.add_document(ids, [len(ids)])
    builder.finalize(str(base) + ".idx")
    _, prefix = run(tmp_path, [corpus["dir"] / "clean.jsonl"], model, append_eod=True, prepend_bos=bos)
    assert files_of(prefix) == files_of(base)


def test_workers_2_equals_workers_1_through_cli(tmp_path, corpus, model):
    outs = []
    for workers in (1, 2):
        prefix = tmp_path / f"w{workers}"
        proc = subprocess.run(
            [sys.executable, str(TOOL), "--input", str(corpus["dir"] / "mixed.jsonl.zst"), "--output-prefix", str(prefix),
             "--tokenizer-type", "Llama2Tokenizer", "--tokenizer-model", str(model), "--append-eod",
             "--workers", str(workers), "--chunk-mb", "0.03", "--json-keys", "text"],
            capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert f"kept {len(corpus['texts']):,} documents" in proc.stderr
        outs.append(files_of(f"{prefix}_text_document"))
    assert outs[0] == outs[1]


def test_source_tree(tmp_path, model, sp):
    root = tmp_path / "repo"
    files = {
        "b.py": "def b():\n    return 2\n",
        "a.c": "int main(void) { return 0; }\n",
        "pkg/z.py": "# 東京 ☺ 😀\nclass Z: pass\n",
        "pkg/sub/y.py": "y = 'ñ'\n",
        ".git/hook.py": "hidden = True\n",
        "README.md": "not selected\n",
        "empty.py": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "latin1.py").write_bytes(b"s = '\xe9'\n")
    (root / "link.py").symlink_to(root / "b.py")  # symlinks are not followed
    (root / "pkg" / "linkdir").symlink_to(root / "pkg" / "sub", target_is_directory=True)
    os.mkfifo(root / "pipe.py")  # not a regular file: never opened (reading it would block)
    rejects = tmp_path / "rejects.jsonl"
    summary, prefix = run(tmp_path, [root], model, append_eod=True, extensions=[".py", "c"],
                          rejects_path=str(rejects))
    kept = ["a.c", "b.py", "pkg/sub/y.py", "pkg/z.py"]  # sorted walk; .git and README.md skipped
    assert summary.documents == len(kept) and dict(summary.rejected) == {"empty": 1, "not_utf8": 1}
    assert read_docs(prefix) == [sp.encode(files[k]) + [sp.eos_id()] for k in kept]
    meta = [json.loads(x) for x in Path(str(prefix) + ".meta.jsonl").read_text().splitlines()]
    assert meta == [{"path": k, "lang": "c" if k.endswith(".c") else "python"} for k in kept]
    assert sorted((r["path"], r["reason"]) for r in map(json.loads, rejects.read_text().splitlines())) == \
        [("empty.py", "empty"), ("latin1.py", "not_utf8")]


def test_several_keys_stay_aligned(tmp_path, model, sp):
    src = tmp_path / "two.jsonl"
    rows = [{"text": f"doc {i} ☺", "code": f"x = {i}"} for i in range(50)]
    rows[7]["code"] = ""  # the whole row goes, from both datasets
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    summary, _ = run(tmp_path, [src], model, json_keys=("text", "code"))
    assert summary.documents == 49 and dict(summary.rejected) == {"empty": 1}
    keep = [r for i, r in enumerate(rows) if i != 7]
    assert read_docs(tmp_path / "out_text_document") == [sp.encode(r["text"]) for r in keep]
    assert read_docs(tmp_path / "out_code_document") == [sp.encode(r["code"]) for r in keep]


@pytest.mark.parametrize("workers", [1, 2])
def test_crash_leaves_no_output(tmp_path, corpus, model, monkeypatch, workers):
    original = worker_module.ChunkProcessor.__call__

    def failing(self, chunk):
        if chunk.index == 3:
            raise RuntimeError("planted failure")
        return original(self, chunk)

    monkeypatch.setattr(worker_module.ChunkProcessor, "__call__", failing)  # forked workers inherit it
    with pytest.raises(RuntimeError, match="planted failure"):
        run(tmp_path, [corpus["dir"] / "mixed.jsonl"], model, workers=workers, rejects_path=str(tmp_path / "r.jsonl"),
            meta_keys=("lang",))
    assert os.listdir(tmp_path) == []


def test_cli_errors_name_the_problem(tmp_path, model):
    def cli(*args):
        return subprocess.run([sys.executable, str(TOOL), "--output-prefix", str(tmp_path / "o"),
                               "--tokenizer-model", str(model), *args], capture_output=True, text=True)

    proc = cli("--input", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2 and "missing.jsonl" in proc.stderr
    proc = cli("--input", str(tmp_path), "--split-sentences")
    assert proc.returncode == 2 and "--split-sentences is not supported" in proc.stderr
    proc = cli("--input", str(tmp_path), "--tokenizer-type", "GPT2BPETokenizer")
    assert proc.returncode == 2 and "only SentencePiece" in proc.stderr
    proc = cli("--input", str(tmp_path), "--workers", "0")
    assert proc.returncode == 2 and "workers must be >= 1" in proc.stderr
    assert np.array(os.listdir(tmp_path)).size == 0


def test_merge_tool_and_slurm_array_job(tmp_path, corpus, model, sp):
    """Shards preprocessed as the SLURM array job does them, then merged with
    tools/merge_datasets.py (Megatron-LM's flags): Megatron-Core reads the documents of every
    shard, in shard order."""
    shards = [corpus["dir"] / "clean.jsonl", corpus["dir"] / "mixed.jsonl.gz"]
    listing = tmp_path / "shards.txt"
    listing.write_text("".join(f"{s}\n" for s in shards))
    out = tmp_path / "out"
    for task in range(len(shards)):
        env = {**os.environ, "DRY_RUN": "1", "SLURM_ARRAY_TASK_ID": str(task), "SLURM_CPUS_PER_TASK": "2",
               "PYTHON": sys.executable}
        cmd = subprocess.run(["bash", "launch/slurm/preprocess.sbatch", str(listing), str(out), str(model), "--quiet"],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.split()
        assert cmd[1:] == ["tools/preprocess_data.py", "--input", str(shards[task]), "--output-prefix",
                           f"{out}/{task:05d}_{['clean', 'mixed'][task]}", "--tokenizer-model", str(model),
                           "--append-eod", "--workers", "2", "--rejects",
                           f"{out}/{task:05d}_{['clean', 'mixed'][task]}.rejects.jsonl", "--quiet"]
        out.mkdir(exist_ok=True)
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    bad = subprocess.run(["bash", "launch/slurm/preprocess.sbatch", str(listing), str(out), str(model)], cwd=ROOT,
                         env={**os.environ, "DRY_RUN": "1", "SLURM_ARRAY_TASK_ID": "2"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "has no line 3 for array task 2" in bad.stderr
    merge = [sys.executable, str(ROOT / "tools" / "merge_datasets.py")]
    proc = subprocess.run(merge + ["--input", str(out), "--output-prefix", str(tmp_path / "all")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "merged 2 datasets" in proc.stderr, proc.stderr
    clean = [json.loads(line)["text"] for line in (corpus["dir"] / "clean.jsonl").read_text().splitlines()]
    expected = [sp.encode(t) + [sp.eos_id()] for t in clean + corpus["texts"]]
    assert read_docs(tmp_path / "all") == expected
    wide = tmp_path / "wide"
    with IndexedDatasetWriter(str(wide), np.int32) as w:
        w.add_documents(np.arange(5), np.array([5]))
    proc = subprocess.run(merge + ["--input", f"{out}/00000_clean_text_document", str(wide),
                                   "--output-prefix", str(tmp_path / "mixed_dtypes")], capture_output=True, text=True)
    assert proc.returncode == 2 and "merge needs one dtype" in proc.stderr
    assert not list(tmp_path.glob("mixed_dtypes*"))


def test_preprocess_and_merge_create_the_output_directory(tmp_path, corpus, model, sp):
    """An --output-prefix under directories that do not exist yet: both tools create them."""
    out = tmp_path / "new" / "deeper" / "ds"
    proc = subprocess.run([sys.executable, str(TOOL), "--input", str(corpus["dir"] / "clean.jsonl"),
                           "--output-prefix", str(out), "--tokenizer-model", str(model), "--append-eod",
                           "--rejects", str(tmp_path / "elsewhere" / "rejects.jsonl"), "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    clean = [json.loads(line)["text"] for line in (corpus["dir"] / "clean.jsonl").read_text().splitlines()]
    assert read_docs(f"{out}_text_document") == [sp.encode(t) + [sp.eos_id()] for t in clean]
    assert (tmp_path / "elsewhere" / "rejects.jsonl").is_file()
    merged = tmp_path / "merged" / "all"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "merge_datasets.py"), "--input",
                           f"{out}_text_document", "--output-prefix", str(merged)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert files_of(merged) == files_of(f"{out}_text_document")
    (tmp_path / "file").write_text("")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "merge_datasets.py"), "--input",
                           f"{out}_text_document", "--output-prefix", str(tmp_path / "file" / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and f"{tmp_path / 'file'} exists and is not a directory" in proc.stderr

#!/usr/bin/env python
"""Peak memory of the HF ↔ megacode conversion against the model's size.

    python tools/bench_convert.py [--layers 2] [--tp 2] [--workdir DIR] [--keep]

Writes a random Llama 2 7B-shaped model with fewer layers (2 layers: 0.67 B parameters, 1.33 GB
in fp16; the full vocabulary and hidden size, so the largest tensors are the real 7B ones),
tensor by tensor, as a Hugging Face directory (config.json from transformers' LlamaConfig,
500 MB safetensors shards, a 32,000-piece SentencePiece tokenizer), then runs
`tools/convert_checkpoint.py` both ways in child processes and reports each child's peak
resident set against the size of the weights. A third child that only
imports what the tool imports gives the interpreter's own share. Each child writes its own
high-water mark (VmHWM) as it exits. The round trip is checked:
every exported tensor equals the input (the embedding and output layer on their first 32,000
rows; the import grows them to Code Llama's 32,016).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASELINE = ("import sys; sys.path.insert(0, {repo!r}); import megacode.convert, megacode.checkpoint.dist_ckpt, "
            "megacode.models.llama, transformers; from transformers import AutoTokenizer")


def make_tokenizer(path: Path, pieces: int = 32000) -> None:
    """A Llama-like BPE model trained on the standard library (1,000 pieces), padded to `pieces`
    with pieces no merge can reach (two private-use characters each), like a 32,000-piece Llama 2
    tokenizer in size and ids without training one."""
    import sysconfig

    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    from megacode.tokenizer.train import train_llama_like

    lines = []
    for source in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:60]:
        lines += [ln for ln in source.read_text(encoding="utf-8", errors="ignore").splitlines() if ln.strip()]
    small = path.with_suffix(".small")
    train_llama_like(lines, 1000, small, num_threads=2)
    proto = model_pb2.ModelProto()
    proto.ParseFromString(small.read_bytes())
    low = min(p.score for p in proto.pieces)
    for i in range(pieces - len(proto.pieces)):
        piece = proto.pieces.add()
        piece.piece = chr(0xE000 + i // 2048) + chr(0xE800 + i % 2048)
        piece.score = low - 1.0 - i
        piece.type = model_pb2.ModelProto.SentencePiece.NORMAL
    proto.trainer_spec.vocab_size = len(proto.pieces)
    path.write_bytes(proto.SerializeToString())
    small.unlink()


def make_model(directory: Path, layers: int) -> int:
    """Random fp16 Llama 2 7B shape with `layers` layers; returns the weights' size in bytes."""
    import torch
    from transformers import LlamaConfig

    from megacode.convert.hf_layout import ModelShape
    from megacode.convert.safetensors_io import PlannedTensor, write_sharded

    directory.mkdir(parents=True)
    LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                tie_word_embeddings=False, dtype="float16").save_pretrained(directory)
    generator = torch.Generator().manual_seed(0)

    def random(shape):
        return lambda: (torch.randn(shape, generator=generator) * 0.02).to(torch.float16)

    shape = ModelShape(layers, 4096, 32, 32, 11008, 32000)
    tensors = [PlannedTensor(name, dims, torch.float16, random(dims)) for name, dims in shape.hf_shapes().items()]
    write_sharded(directory, tensors, 500_000_000)
    make_tokenizer(directory / "tokenizer.model")
    return sum(t.nbytes for t in tensors)


# Runs a program and writes its peak resident set (VmHWM) at exit. Not rusage: Linux carries
# ru_maxrss across fork and exec, so a child would report the parent's peak if that was higher.
PEAK_WRAPPER = """
import atexit, runpy, sys
def report(path=sys.argv[1]):
    with open("/proc/self/status") as status, open(path, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(report)
program, sys.argv = sys.argv[2], sys.argv[2:]
if program == "-c":
    exec(sys.argv[1])
else:
    runpy.run_path(program, run_name="__main__")
"""


def run_child(argv: list, peak_file: Path) -> tuple[float, float]:
    """(peak RSS in GiB, seconds) of `python argv...` in a child process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, str(peak_file)] + [str(a) for a in argv],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed with exit code {done.returncode}")
    return int(peak_file.read_text()) / 2**20, time.perf_counter() - start  # VmHWM is in kB


def check_round_trip(source: Path, exported: Path) -> int:
    import torch
    from safetensors import safe_open

    def tensors(directory):
        for path in sorted(directory.glob("*.safetensors")):
            with safe_open(path, "pt") as handle:
                for name in handle.keys():
                    yield name, path

    theirs = dict(tensors(exported))
    checked = 0
    for name, path in tensors(source):
        with safe_open(path, "pt") as a, safe_open(theirs[name], "pt") as b:
            x, y = a.get_tensor(name), b.get_tensor(name)
            if not torch.equal(x, y[: x.shape[0]]):
                raise SystemExit(f"round trip changed {name}")
        checked += 1
    return checked


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2, help="layers of the 7B-shaped model (2: 1.33 GB)")
    parser.add_argument("--tp", type=int, default=2, help="TP of the import (chunking on disk)")
    parser.add_argument("--workdir", default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_convert."))
    tool = [str(REPO / "tools" / "convert_checkpoint.py")]
    try:
        size = make_model(work / "hf", args.layers)
        largest_shard = max(p.stat().st_size for p in (work / "hf").glob("*.safetensors"))
        base_rss, _ = run_child(["-c", BASELINE.format(repo=str(REPO))], work / "peak.base")
        imp_rss, imp_s = run_child(tool + ["hf-to-megacode", "--input", work / "hf", "--output", work / "ckpt",
                                           "--tp", args.tp, "--no-progress"], work / "peak.import")
        exp_rss, exp_s = run_child(tool + ["megacode-to-hf", "--input", work / "ckpt", "--output", work / "out",
                                           "--max-shard-size", "500MB", "--no-progress"], work / "peak.export")
        checked = check_round_trip(work / "hf", work / "out")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    gib = 2**30
    print(f"model: Llama 2 7B shape, {args.layers} layers, fp16: {size / gib:.2f} GiB of weights "
          f"(largest shard {largest_shard / gib:.2f} GiB, largest tensor {32016 * 4096 * 2 / gib:.2f} GiB)")
    print(f"{'process':<34}{'peak RSS GiB':>14}{'above imports':>15}{'seconds':>9}")
    print(f"{'imports only (baseline)':<34}{base_rss:>14.2f}{'':>15}{'':>9}")
    for label, rss, secs in ((f"hf-to-megacode (TP{args.tp})", imp_rss, imp_s), ("megacode-to-hf", exp_rss, exp_s)):
        print(f"{label:<34}{rss:>14.2f}{rss - base_rss:>15.2f}{secs:>9.1f}")
    print(f"peak RSS / model size: import {imp_rss * gib / size:.2f}, export {exp_rss * gib / size:.2f}; "
          f"round trip checked on {checked} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())

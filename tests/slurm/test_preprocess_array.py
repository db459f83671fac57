"""preprocess.sbatch as a real SLURM array job (one task per shard), then tools/merge_datasets.py:
Megatron-Core's IndexedDataset reads every document of every shard, in shard order."""

from __future__ import annotations

import json
import sys

from tests.slurm.conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "data"))
from spm_fixtures import stdlib_texts, train_model  # noqa: E402


def test_array_job_over_shards_then_merge_reads_every_document_in_order(cluster, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megacode.tokenizer import load

    texts = [t for t in stdlib_texts(300_000) if t.strip()]
    model = train_model([ln for t in texts for ln in t.splitlines() if ln.strip()], 512)
    shards = [texts[i::3][:5] for i in range(3)]
    listing = tmp_path / "shards.txt"
    paths = []
    for index, docs in enumerate(shards):
        path = tmp_path / f"shard{index}.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        paths.append(str(path))
    listing.write_text("\n".join(paths) + "\n")
    out = tmp_path / "out"
    job = cluster.sbatch("--array=0-2", "--cpus-per-task=1", f"--output={tmp_path}/%x-%A_%a.out",
                         "launch/slurm/preprocess.sbatch", str(listing), str(out), str(model),
                         env={"PYTHON": sys.executable})
    for task in range(3):
        info = cluster.wait(f"{job}_{task}")
        assert info["JobState"] == "COMPLETED", (tmp_path / f"megacode-preprocess-{job}_{task}.out").read_text()
    merged = tmp_path / "merged_text_document"
    proc = cluster.run(sys.executable, "tools/merge_datasets.py", "--input", str(out), "--output-prefix", str(merged))
    dataset = IndexedDataset(str(merged))
    tok = load(model)
    expected = [tok.encode(d) + [tok.eos_id] for docs in shards for d in docs]
    assert len(dataset) == len(expected) and all(len(docs) >= 2 for docs in shards), proc.stdout
    for index, ids in enumerate(expected):
        assert dataset[index].tolist() == ids, index

"""The one-command main job at small scale: corpus -> tokenizer -> datasets -> HF "Llama 2"
import -> four stages on 4 gloo ranks -> HF export -> infilling with transformers.

Runs `launch/quickstart.sh` with fewer steps per stage (QUICK=1); its artefacts land in the
checkout's runs/tiny/, like `make quickstart`'s.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.training.launch import REPO

RUN = REPO / "runs" / "tiny"
STAGES = ["stage1_code", "stage2_python", "stage3_long_context", "stage4_instruct"]


@pytest.fixture(scope="module")
def chain():
    env = {**os.environ, "QUICK": "1", "QUICK_ITERS": "10", "CORPUS_FILES": "120", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "launch/quickstart.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900, start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    return proc.stdout


def _losses(stage):
    text = (RUN / f"{stage}.log").read_text()
    return [float(x) for x in re.findall(r"train step \d+ \| loss ([0-9.]+)", text)]


def test_every_stage_trains_and_its_loss_falls(chain):
    for stage in STAGES:
        losses = _losses(stage)
        assert len(losses) == 10, (stage, losses)
        assert np.mean(losses[-3:]) < np.mean(losses[:3]), (stage, losses)
        assert (RUN / stage / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "10"


def test_long_context_stage_changes_rope_base_and_sequence(chain):
    from megacode.checkpoint.dist_ckpt import read_common

    stage1 = read_common(RUN / "stage1_code" / "checkpoints" / "iter_0000010")["config"]
    stage3 = read_common(RUN / "stage3_long_context" / "checkpoints" / "iter_0000010")["config"]
    assert stage1["model"]["rope_base"] is None  # the flavor's 10,000 (Llama 2)
    assert stage3["model"]["rope_base"] == 1e6
    assert stage3["data"]["seq_length"] == 4 * stage1["data"]["seq_length"]  # 4,096 -> 16,384, scaled
    hf_config = json.loads((RUN / "hf" / "codellama-tiny" / "config.json").read_text())
    assert hf_config["rope_theta"] == 1e6 and hf_config["vocab_size"] == 512


def test_instruct_loss_mask_covers_exactly_the_answers(chain):
    from megacode.data.indexed import IndexedDataset
    from megacode.tokenizer import load

    tok = load(RUN / "tokenizer" / "tokenizer.model")
    tokens = IndexedDataset(str(RUN / "data" / "instruct" / "dialogs"))
    masks = IndexedDataset(str(RUN / "data" / "instruct" / "dialogs_lossmask"))
    dialogs = [json.loads(line) for line in (RUN / "corpus" / "dialogs.jsonl").read_text().splitlines()]
    assert len(tokens) == len(dialogs)
    for index, dialog in enumerate(dialogs):
        ids, mask = tokens[index].astype(np.int64), masks[index].astype(bool)
        answers = [m["content"] for m in dialog["messages"] if m["role"] == "assistant"]
        # The masked tokens are the answers, each closed by EOS; nothing of the prompts.
        spans, current = [], []
        for token, on in zip(ids.tolist(), mask.tolist()):
            if on:
                current.append(token)
            elif current:
                spans.append(current)
                current = []
        if current:
            spans.append(current)
        assert len(spans) == len(answers), index
        for span, answer in zip(spans, answers):
            assert span[-1] == tok.eos_id
            assert tok.decode(span[:-1]).strip() == answer.strip()


def test_export_loads_and_infills(chain):
    assert "infilling (PSM) with" in chain
    assert "\u27e6" in chain and "\u27e7" in chain  # the completion between the markers
    assert (RUN / "hf" / "codellama-tiny-instruct" / "tokenizer.model").is_file()

"""A short instruct stage end to end: configs/tiny/stage4_instruct.yaml on 2 gloo ranks (TP2 with
sequence parallel), 48 tokenized dialogs (answer-only loss) blended with 6% code and 2% NL
rehearsal from a tiny preprocessed corpus, Megatron-Core's real schedules and optimizer; the loss
falls. A second run starts from the first one's checkpoint as the recipe's stages do (weights
only: fresh optimizer, schedule and step counter)."""

from __future__ import annotations

import json

from tests.training.launch import REPO, torchrun

CONFIG = REPO / "configs" / "tiny" / "stage4_instruct.yaml"


def _overrides(corpus, tmp, name, *extra):
    return [f"data.paths=[{{path: {corpus['instruct']}, weight: 0.92, kind: dialog}}, "
            f"{{path: {corpus['code']}, weight: 0.06}}, {{path: {corpus['nl']}, weight: 0.02}}]",
            f"data.tokenizer_model={corpus['model']}", f"data.cache_dir={corpus['cache']}",
            "data.seq_length=64", "train.global_batch_tokens=512", "train.micro_batch_size=2",
            "parallel.tp=2", "parallel.pp=1", "schedule.warmup_iters=2", "optim.lr=1e-2", "logging.interval=1",
            f"checkpoint.dir={tmp / name}", "logging.dir=null", *extra]


def _run(corpus, tmp, name, *extra):
    history = tmp / f"{name}.json"
    proc = torchrun(2, ["-m", "megacode.train", "--config", str(CONFIG), "--history-json", str(history)]
                    + _overrides(corpus, tmp, name, *extra), timeout=300)
    return json.loads(history.read_text()), proc


def test_instruct_stage_loss_falls_then_next_stage_starts_fresh(recipe_corpus, tmp_path):
    steps, proc = _run(recipe_corpus, tmp_path, "instruct", "train.iters=24", "checkpoint.load=null",
                       "checkpoint.finetune=false")
    losses = [s["loss"] for s in steps]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.6 * sum(losses[:3]) / 3, losses
    assert "BlendedDataset(3 datasets, weights=[0.92, 0.06, 0.02]" in proc.stdout, proc.stdout[-2000:]

    # The next stage: weights from the checkpoint above, a new optimizer and schedule from step 0
    # (the LR warms up again), and the loss starts where the first run ended, not at ln(vocab).
    after, proc = _run(recipe_corpus, tmp_path, "next", "train.iters=4", f"checkpoint.load={tmp_path / 'instruct'}",
                       "checkpoint.finetune=true")
    assert [s["step"] for s in after] == [1, 2, 3, 4]
    assert after[0]["lr"] < after[1]["lr"]  # warm-up restarted
    assert after[0]["loss"] < 0.75 * losses[0], (after[0]["loss"], losses)
    assert "weights only, new stage" in proc.stdout + proc.stderr

"""Logit and loss parity between `transformers` and megacode across the conversion.

- A tiny random Llama (MHA and GQA) imported at TP2 x PP2 and run by megacode on 4 gloo ranks
  gives the logits of `LlamaForCausalLM` on the same tokens (fp32, 1e-4) and the same loss; so
  does the GQA import loaded at TP1 x PP2 x VP2 x DP2.
- After megacode.train ran 3 steps from the import at TP1 x PP2 (RoPE base 1e6), the export
  loaded by `AutoModelForCausalLM` computes the loss megacode's `evaluate()` reports at
  TP2 x PP1 on the same validation batch.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megacode.data.synthetic import SyntheticTokens


def _hf_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


LAYOUTS = {"mha": [[2, 2, None, 1]], "gqa": [[2, 2, None, 1]], "gqa_vp": [[1, 2, 2, 2]] * 2}


@pytest.mark.parametrize("run", ["mha", "gqa", "gqa_vp"])
def test_logits_match_transformers(run, hf_models, worker):
    """MHA and GQA at TP2 x PP2 (the import's layout); GQA also at TP1 x PP2 x VP2 x DP2."""
    results, tokens = worker[run], worker["tokens"]
    assert [r["layout"] for r in results] == LAYOUTS[run]
    model = _hf_model(hf_models[run.split("_")[0]])
    assert model.config.num_key_value_heads == (4 if run == "mha" else 2)
    with torch.no_grad():
        reference = model(tokens[:, :-1]).logits  # [b, s, 512]
    # Random weights give logits of order 1: a wrong head order or norm would be off by that much.
    assert reference.abs().max() > 0.5
    for result in results:  # one per data-parallel rank, each with its samples
        ours = result["logits"]
        assert ours.shape == reference[result["samples"]].shape  # tiny's 512 rows need no padding
        torch.testing.assert_close(ours, reference[result["samples"]], atol=1e-4, rtol=0)
    assert sorted(s for r in results for s in r["samples"]) == list(range(tokens.shape[0]))
    # megacode's loss (vocab-parallel cross entropy, reduced over DP) against transformers'.
    loss = F.cross_entropy(reference.reshape(-1, reference.shape[-1]), tokens[:, 1:].reshape(-1))
    assert results[0]["tokens"] == tokens[:, 1:].numel()
    assert results[0]["loss"] == pytest.approx(loss.item(), abs=1e-5)


def test_export_after_training_gives_megacode_evaluation_loss(exported_trained, hf_models, worker):
    evaluation = worker["evaluate"]
    assert evaluation["layout"] == [2, 1, None, 2]
    config = json.loads((exported_trained / "config.json").read_text())
    assert config["rope_theta"] == 1e6 and config["vocab_size"] == 512
    model = _hf_model(exported_trained)
    assert model.config.rope_parameters["rope_theta"] == 1e6
    # Training moved the weights away from the imported ones.
    before = _hf_model(hf_models["gqa"]).state_dict()
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.endswith("proj.weight"))
    # The trainer's validation stream (synthetic, seed + 1): the first eval_iters global batches.
    valid = SyntheticTokens(512, evaluation["seq_length"], evaluation["seed"] + 1)
    count = evaluation["eval_iters"] * evaluation["global_batch_size"]
    batch = torch.from_numpy(np.stack([valid[i] for i in range(count)]))  # [16, 33]
    with torch.no_grad():
        logits = model(batch[:, :-1]).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).item()
    assert loss == pytest.approx(evaluation["loss"], abs=1e-4)

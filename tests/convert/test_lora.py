"""LoRA on the export (how downstream users fine-tune Code Llama, e.g. for Text2SQL): `peft`
fine-tunes the exported custom-shape model for a few steps, the loss falls, and the merged model
computes the adapter model's logits."""

import torch
import torch.nn.functional as F

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _loss(model, tokens):
    logits = model(tokens[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def test_lora_fine_tunes_the_export_and_merges(custom_export):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(custom_export, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.numel() < base.config.hidden_size * 400 for p in trainable)  # adapters only
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    # A fixed batch of arithmetic sequences (a learnable pattern): 4 sequences of 32 tokens.
    tokens = (torch.arange(4).unsqueeze(1) * 5 + torch.arange(33).unsqueeze(0) * 3) % 512
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    losses = []
    for _ in range(6):
        loss = _loss(model, tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] - 0.3, losses
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)
    model.eval()
    probe = torch.arange(80).reshape(2, 40) * 7 % 512
    with torch.no_grad():
        adapted = model(probe).logits
        merged = model.merge_and_unload()
        assert not any("lora" in name for name, _ in merged.named_parameters())
        torch.testing.assert_close(merged(probe).logits, adapted, atol=1e-5, rtol=0)

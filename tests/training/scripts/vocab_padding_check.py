"""Run in a fresh process by test_vocab_padding.py: padded vocabulary rows get no probability."""

import torch
from megacode.config import load_config, resolve_layout
from megacode.models.params import _single_process_group
from megatron.core import parallel_state
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed
from megacode.models.llama import build_model
if __name__ == "__main__":
    _single_process_group(); parallel_state.initialize_model_parallel(1, 1); model_parallel_cuda_manual_seed(1)
    cfg = load_config("configs/tiny/pretrain.yaml", ["parallel.tp=1", "parallel.pp=1", "data.vocab_size=500"])
    model = build_model(cfg, resolve_layout(cfg, 1))[0]
    torch.nn.init.normal_(model.output_layer.weight, std=0.5)
    tokens = torch.randint(0, 500, (2, 16)); labels = torch.randint(0, 500, (2, 16))
    pos = torch.arange(16).unsqueeze(0).expand(2, 16)
    loss = model(tokens, pos, None, labels=labels)              # [b, s]
    logits = model(tokens, pos, None)                            # [b, s, V]
    assert logits.shape[-1] == 512 and torch.isinf(logits[..., 500:]).all()
    ref = torch.nn.functional.cross_entropy(logits[..., :500].reshape(-1, 500), labels.reshape(-1), reduction="none")
    assert torch.allclose(loss.reshape(-1), ref, atol=1e-5), (loss.reshape(-1)[:4], ref[:4])
    loss.sum().backward()
    assert torch.isfinite(model.output_layer.weight.grad).all()
    print("ok")

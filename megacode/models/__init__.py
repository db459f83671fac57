"""Llama models on Megatron-Core: specs (TE or local), builder, parameter counts."""

from megacode.models.params import count_model_parameters, parameter_count

__all__ = ["count_model_parameters", "parameter_count"]

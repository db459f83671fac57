"""Distributed checkpoints (Megatron dist_checkpointing, torch_dist) and the latest-step tracker."""

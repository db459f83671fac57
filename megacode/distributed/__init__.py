"""Process groups, Megatron parallel state, and the CPU mapping of Megatron-Core."""

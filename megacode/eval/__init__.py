"""Evaluation: the execution sandbox, HumanEval and MBPP scoring, pass@k."""

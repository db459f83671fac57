"""Typed configuration of the self-instruct pipeline (`tools/self_instruct.py`,
configs/selfinstruct/*.yaml). Paper figures (Code Llama §2.5): 62,000 questions from Llama 2 70B
(50 per prompt), about 52,000 after exact-duplicate removal, Code Llama 7B writing the unit
tests and ten solutions per question, about 14,000 kept triplets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megacode.config.schema import ConfigError
from megacode.eval.generate import GenerationSettings
from megacode.eval.sandbox_config import SandboxConfig

# Code Llama Instruct answers coding questions as "[PYTHON] ... [/PYTHON]" followed by
# "[TESTS] ... [/TESTS]": the layout of the self-instruct prompts, so the default answer keeps it.
DEFAULT_ANSWER = "[PYTHON]\n{solution}\n[/PYTHON]\n[TESTS]\n{tests}\n[/TESTS]"


@dataclass
class SelfInstructConfig:
    """Models, sizes, decoding and sandbox settings of one self-instruct run."""

    output_dir: str = "runs/self-instruct"
    """Every stage's output file goes here; a stage resumes from what it finds."""
    question_model: Optional[str] = None
    """HF directory of the model writing questions (Llama 2 70B in the paper)."""
    code_model: Optional[str] = None
    """HF directory of the model writing tests and solutions (Code Llama 7B in the paper)."""
    rounds: int = 1240
    """Question prompts to sample; 1240 x 50 questions = the paper's 62,000."""
    questions_per_prompt: int = 50
    """How many questions each prompt asks for."""
    tests_per_question: int = 5
    """How many unit tests the test prompt asks for."""
    chunk_size: int = 64
    """Questions per generation/execution chunk: the unit of progress that a resumed run keeps."""
    seed: int = 0
    """Base of every sampling seed; chunk i of a stage samples with a seed derived from it and i."""
    system_prompt: Optional[str] = None
    """System message of each dialog; None = dialogs without a system message."""
    answer_template: str = DEFAULT_ANSWER
    """Assistant message of each dialog; {solution} and {tests} are filled in."""
    question_generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(
        max_new_tokens=2048, temperature=0.8, top_p=0.95, batch_size=8))
    test_generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(
        max_new_tokens=512, temperature=0.0, batch_size=16))
    solution_generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(
        max_new_tokens=512, temperature=0.8, top_p=0.95, num_samples=10, batch_size=32))
    """num_samples = solutions per question (ten in the paper)."""
    sandbox: SandboxConfig = field(default_factory=lambda: SandboxConfig(timeout_s=10.0))

    def __post_init__(self) -> None:
        for name in ("rounds", "questions_per_prompt", "tests_per_question", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("question_generation", "test_generation"):
            samples = getattr(self, name).num_samples
            if samples != 1:
                raise ConfigError(f"{name}.num_samples must be 1 (rounds / one test set per question), got {samples}")
        if "{solution}" not in self.answer_template:
            raise ConfigError(f"answer_template must contain {{solution}}, got {self.answer_template!r}")

    @property
    def solutions_per_question(self) -> int:
        return self.solution_generation.num_samples

"""The three self-instruct prompts (Code Llama §2.5, Figures 9-11) and the parsers of answers.

The prompts follow the paper's figures: a Llama 2 chat turn asking for numbered interview
questions; a one-example turn asking for unit tests between [TESTS] tags, each under a
"# Test case n:" comment; a one-example turn asking for a solution between [PYTHON] tags given
one of the tests (from which the model infers the function's name and signature).
Generation stops at the closing tag, so parsers accept the block with or without it.
"""

from __future__ import annotations

import ast
import re
from typing import Optional

QUESTIONS = (
    "[INST] Write {n} programming interview questions of easy and medium complexity. Provide questions on a "
    "diverse range of subjects, and make sure no two questions are alike. Make sure the problems can be solved "
    "with a single standalone Python function using standard libraries. [/INST]\n"
)
QUESTIONS_STOP = ["[INST]"]

TESTS = (
    "[INST] Your task is to write {n} tests to check the correctness of a function that solves a programming "
    "problem.\nThe tests must be between [TESTS] and [/TESTS] tags.\nYou must write the comment \"#Test case n:\" "
    "on a separate line directly above each assert statement, where n represents the test case number, starting "
    "from 1 and increasing by one for each subsequent test case.\n\n"
    "Problem: Write a Python function to get the unique elements of a list.\n[/INST]\n"
    "[TESTS]\n# Test case 1:\nassert get_unique_elements([]) == []\n# Test case 2:\n"
    "assert get_unique_elements([1]) == [1]\n# Test case 3:\nassert get_unique_elements([1, 2, 3, 2, 1]) == [1, 2, 3]\n"
    "[/TESTS]\n\n"
    "[INST] Problem: {question}\n[/INST]\n"
)
TESTS_STOP = ["[/TESTS]"]

SOLUTION = (
    "[INST] Your task is to write a Python function to solve a programming problem.\nThe Python code must be "
    "between [PYTHON] and [/PYTHON] tags.\nYou are given one example test from which you can infer the function "
    "signature.\n\nProblem: Write a Python function to get the unique elements of a list.\n"
    "Test: assert get_unique_elements([1, 2, 3, 2, 1]) == [1, 2, 3]\n[/INST]\n"
    "[PYTHON]\ndef get_unique_elements(my_list):\n    return list(set(my_list))\n[/PYTHON]\n\n"
    "[INST] Problem: {question}\nTest: {test}\n[/INST]\n"
)
SOLUTION_STOP = ["[/PYTHON]"]

_NUMBERED = re.compile(r"^\s*(\d{1,3})[.)]\s+(\S.*?)\s*$")


def questions_prompt(n: int) -> str:
    return QUESTIONS.format(n=n)


def tests_prompt(question: str, n: int) -> str:
    return TESTS.format(n=n, question=question)


def solution_prompt(question: str, test: str) -> str:
    return SOLUTION.format(question=question, test=test)


def parse_questions(text: str) -> list[str]:
    """Numbered items ("1. ...", "2) ..."); an unnumbered line continues the item above it (the
    model wraps long questions), a blank line ends it. Text before the first item is ignored."""
    questions: list[str] = []
    open_item = False
    for line in text.splitlines():
        match = _NUMBERED.match(line)
        if match:
            questions.append(match.group(2))
            open_item = True
        elif line.strip() and open_item:
            questions[-1] += " " + line.strip()
        else:
            open_item = False
    return [q for q in (" ".join(q.split()) for q in questions) if len(q) >= 10]


def _block(text: str, open_tag: str, close_tag: str) -> Optional[str]:
    start = text.find(open_tag)
    if start < 0:
        return None
    body = text[start + len(open_tag):]
    end = body.find(close_tag)
    return body if end < 0 else body[:end]


def parse_tests(text: str) -> list[str]:
    """The assert statements inside [TESTS] ... [/TESTS], each as its own source text. A block
    cut off mid-statement (max_new_tokens) keeps the asserts that are complete."""
    block = _block(text, "[TESTS]", "[/TESTS]")
    if block is None:
        return []
    try:
        tree = ast.parse(block)
    except SyntaxError:
        return [line.strip() for line in block.splitlines() if _is_assert(line.strip())]
    return [ast.get_source_segment(block, node).strip() for node in tree.body if isinstance(node, ast.Assert)]


def _is_assert(line: str) -> bool:
    if not line.startswith("assert"):
        return False
    try:
        return isinstance(ast.parse(line).body[0], ast.Assert)
    except SyntaxError:
        return False


def parse_solution(text: str) -> Optional[str]:
    """The code inside [PYTHON] ... [/PYTHON], or None when there is no such block. It is not
    compiled here: the sandbox reports a syntax error like any other failure."""
    block = _block(text, "[PYTHON]", "[/PYTHON]")
    if block is None or not block.strip():
        return None
    return block.strip("\n")


def format_tests(tests: list[str]) -> str:
    """Tests in the layout the test prompt asks for."""
    return "\n".join(f"# Test case {i}:\n{test}" for i, test in enumerate(tests, 1))

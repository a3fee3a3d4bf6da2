"""The test command: lint, format check, type check, then every test layer.

Usage: ``python -m tools.check [pytest args...]`` (``make test`` does this). Each step
prints its wall time; the first failing step stops the run with its exit code.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time

log = logging.getLogger("check")


def _steps(pytest_args: list[str]) -> list[tuple[str, list[str]]]:
    py = sys.executable
    return [
        ("ruff lint", [py, "-m", "ruff", "check", "."]),
        ("ruff format", [py, "-m", "ruff", "format", "--check", "."]),
        ("mypy", [py, "-m", "mypy", "shared", "services", "tools", "tests", "bench"]),
        # Tests wait on the broker far more than they compute: two workers (one per core,
        # so fault tests keep a realistic machine), one file each at a time (files share
        # module-scoped stacks).
        (
            "pytest",
            [py, "-m", "pytest", "-q", "-ra", "-n", "2", "--dist", "loadfile", *pytest_args],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run every step; return the first failure's exit code."""
    logging.basicConfig(level=logging.INFO, format="== %(message)s")
    args = sys.argv[1:] if argv is None else argv
    total = time.monotonic()
    for name, cmd in _steps(args):
        log.info("%s ...", name)
        start = time.monotonic()
        code = subprocess.call(cmd)
        log.info(
            "%s: %s in %.1fs",
            name,
            "ok" if code == 0 else f"FAILED ({code})",
            time.monotonic() - start,
        )
        if code != 0:
            return code
    log.info("all checks passed in %.1fs", time.monotonic() - total)
    return 0


if __name__ == "__main__":
    sys.exit(main())

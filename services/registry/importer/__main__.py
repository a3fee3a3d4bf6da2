"""``python -m services.registry.importer FILE... --registry URL --token TOKEN [--dry-run]``

Imports files national systems already hold through the registry's ``POST /v1/import``,
one request per file, so the API's rules and the token's rights apply as to any call.
Prints one tab-separated line per item (file, row or index, identifier, status, problem)
and a summary. Exit codes: 0 nothing refused, 1 an item was refused, 2 a file or the
registry could not be used (unreadable path, refused request, no answer).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from services.registry.importer import FORMATS

# A thousand-row spreadsheet takes the registry seconds; a slow database more.
TIMEOUT_SECONDS = 600.0


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m services.registry.importer",
        description="Import ABSCH JSON, Solr responses and IRCC spreadsheets through "
        "the registry's POST /v1/import; one report line per item.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help=f"{', '.join(FORMATS)}")
    p.add_argument("--registry", required=True, help="registry base URL (http://host:8101)")
    p.add_argument(
        "--token",
        default=os.environ.get("ABSCH_TOKEN"),
        help="a bearer token of the importing government's user (default: $ABSCH_TOKEN)",
    )
    p.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    p.add_argument("--drafts", action="store_true", help="save drafts, publish nothing")
    args = p.parse_args(argv)
    if not args.token:
        p.error("--token (or ABSCH_TOKEN) is required")
    return args


def problem_text(problem: dict[str, Any] | None) -> str:
    """One line for a problem document: each failing field and why, else its detail."""
    if not problem:
        return ""
    errors = problem.get("errors") or []
    if errors:
        return "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
    return f"{problem.get('status')} {problem.get('detail') or problem.get('title')}"


def report(answer: dict[str, Any], out: TextIO) -> int:
    """Write one line per item; the number refused."""
    for item in answer["items"]:
        fields = [
            item["file"],
            item["position"],
            item.get("identifier") or "-",
            item["status"],
            item.get("uid") or "",
            problem_text(item.get("problem")),
        ]
        out.write("\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n")
    refused: int = answer["refused"]
    return refused


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Import each file; the exit code."""
    totals = {"published": 0, "requested": 0, "drafts": 0, "refused": 0}
    failed = False
    headers = {"Authorization": f"Bearer {args.token}"}
    with httpx.Client(base_url=args.registry, headers=headers, timeout=TIMEOUT_SECONDS) as http:
        for path in args.files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                err.write(f"{path}: {exc}\n")
                failed = True
                continue
            body = {
                "files": [{"name": path.name, "content": base64.b64encode(data).decode()}],
                "publish": not args.drafts,
                "dryRun": args.dry_run,
            }
            try:
                resp = http.post("/v1/import", json=body)
            except httpx.HTTPError as exc:
                err.write(f"{path}: the registry did not answer: {exc!r}\n")
                failed = True
                continue
            if resp.status_code != 200:
                err.write(f"{path}: {resp.status_code} {resp.text[:500]}\n")
                failed = True
                continue
            answer = resp.json()
            report(answer, out)
            for key in totals:
                totals[key] += answer[key]
    prefix = "dry run: would be " if args.dry_run else ""
    out.write(prefix + ", ".join(f"{k} {v}" for k, v in totals.items()) + "\n")
    if failed:
        return 2
    return 1 if totals["refused"] else 0


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Entry point; the exit code. The report goes to ``out`` (stdout), failures to
    ``err`` (stderr)."""
    return run(_args(argv), out or sys.stdout, err or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

"""state: the monitor's per-IRCC table value (``irccs`` table) at 1,000,000 IRCCs.

Measured: the value the worker stores per IRCC is ``evaluation.state_to_json(IrccState)``;
faust's ``json`` codec turns it into the changelog message. States are folded with
``domain.apply_ircc_event`` from IRCC records shaped like the ABSCH documentation example
(``bench.b_rules.ircc_record``) for four kinds: valid (1 revision), amended (2), revoked (2,
the second revoking), expired (1); the mix is 75/15/10 % (1, 2, 2 revisions).

Built for real, each in a fresh subprocess whose RSS growth is reported:
- ``dict``: what the faust memory store keeps (the decoded JSON object per key, as after a
  changelog recovery), distinct objects; built at 100,000 (20,000 with --quick) and
  extrapolated, since 1M needs more than 12 GiB and minutes of building;
- ``bytes``: a compact alternative, one compact-JSON ``bytes`` value per key, built at the
  full 1,000,000 (100,000 with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
import zlib
from typing import Any

from bench.common import ROOT, Outcome, Table, mib, progress, rss_bytes

TARGET = 1_000_000
PLACEHOLDER = "CB51626B-CF45-2AA0-3A24-000000000001"
KINDS = {"valid": 0.75, "amended": 0.15, "revoked": 0.10}


def _codec_dumps(value: Any) -> bytes:
    """faust's json codec (what goes to the changelog), or json.dumps if faust moved it."""
    try:
        from faust.serializers import codecs

        return bytes(codecs.get_codec("json").dumps(value))
    except Exception:  # pragma: no cover - faust internals changed
        return json.dumps(value).encode()


def state_values() -> dict[str, dict[str, Any]]:
    """``state_to_json`` of one IRCC of each kind, identifier = PLACEHOLDER."""
    from bench.b_rules import ircc_record
    from services.monitor.domain import apply_ircc_event
    from services.monitor.evaluation import state_to_json

    out = {}
    for kind in ("valid", "amended", "revoked", "expired"):
        rng = random.Random(1)
        revisions = 2 if kind in ("amended", "revoked") else 1
        state = None
        for rev in range(1, revisions + 1):
            body = ircc_record(PLACEHOLDER, rng, kind)
            etype = "ircc.published" if rev == 1 else "ircc.amended"
            data: dict[str, Any] = {
                "uid": f"ABSCH-IRCC-MX-1-{rev}",
                "identifier": PLACEHOLDER,
                "document_id": 1,
                "revision": rev,
                "government": "mx",
                "record": body,
            }
            if rev > 1:
                data["reason"] = {"en": "conditions changed"}
            if kind == "revoked" and rev == revisions:
                etype = "ircc.revoked"
            state = apply_ircc_event(state, etype, data)
        assert state is not None
        out[kind] = state_to_json(state)
    return out


def _mix_kind(i: int) -> str:
    r = (i * 2654435761 % 100) / 100  # deterministic spread
    return "valid" if r < 0.75 else ("amended" if r < 0.90 else "revoked")


def worker(form: str, n: int) -> dict[str, Any]:
    """Build n distinct table values in this process; report RSS growth."""
    values = state_values()
    templates = {k: json.dumps(values[k], separators=(",", ":")).encode() for k in KINDS}
    gc.collect()
    before = rss_bytes(os.getpid()) or 0
    t0 = time.perf_counter()
    table: dict[str, Any] = {}
    partitions: dict[str, int] = {}
    for i in range(n):
        ident = f"CB51626B-CF45-2AA0-3A24-{i:012d}"
        raw = templates[_mix_kind(i)].replace(PLACEHOLDER.encode(), ident.encode())
        table[ident] = json.loads(raw) if form == "dict" else raw
        if form == "dict":
            partitions[ident] = i % 4  # faust's memory store keeps key -> partition too
    seconds = time.perf_counter() - t0
    g0 = time.perf_counter()
    gc.collect()
    gc_seconds = time.perf_counter() - g0
    after = rss_bytes(os.getpid()) or 0
    return {
        "form": form,
        "n": n,
        "rss_growth": after - before,
        "seconds": seconds,
        "gc_seconds": gc_seconds,
    }


async def _spawn(form: str, n: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.b_state",
        "--worker",
        form,
        str(n),
        stdout=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    out, _ = await proc.communicate()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def run(session: Any) -> Outcome:
    values = state_values()
    sizes = {k: len(_codec_dumps(v)) for k, v in values.items()}
    compact = {k: len(json.dumps(v, separators=(",", ":")).encode()) for k, v in values.items()}
    zipped = {
        k: len(zlib.compress(json.dumps(v, separators=(",", ":")).encode(), 6))
        for k, v in values.items()
    }
    mix = sum(sizes[k] * w for k, w in KINDS.items())
    mix_compact = sum(compact[k] * w for k, w in KINDS.items())
    mix_zip = sum(zipped[k] * w for k, w in KINDS.items())
    t = Table(
        "state: one IRCC's value in the monitor's irccs table (state_to_json)",
        ["IRCC kind", "revisions", "faust json codec bytes", "compact JSON bytes", "zlib bytes"],
    )
    for k in ("valid", "amended", "revoked", "expired"):
        revs = len(values[k]["revisions"])
        t.add(k, revs, sizes[k], compact[k], zipped[k])
    t.add("mix 75/15/10", None, mix, mix_compact, mix_zip)
    t.notes.append("measured: serialised bytes of one value per kind (the changelog message)")

    # The dict form costs ~13 KB and ~0.1 ms per IRCC (json.loads plus the cyclic GC walking
    # ever more objects): 1M would need >12 GiB and minutes, so it is built at 100k and
    # extrapolated; the compact bytes form is built at the full 1M.
    plan = (
        {"dict": 20_000, "bytes": 100_000} if session.quick else {"dict": 100_000, "bytes": TARGET}
    )
    built = []
    for form, n in plan.items():
        progress(f"state: building {n:,} table values as {form} in a subprocess")
        built.append(await _spawn(form, n))
    b = Table(
        f"state: {TARGET:,} IRCCs in memory",
        [
            "form",
            "built",
            "RSS growth MiB",
            "bytes per IRCC",
            f"{TARGET:,} IRCCs GiB",
            "how",
            "build s",
            "full GC s",
        ],
    )
    data: dict[str, Any] = {
        "json_bytes": sizes,
        "compact_bytes": compact,
        "zlib_bytes": zipped,
        "mix_json_bytes": mix,
        "json_1m_gib": mix * TARGET / 2**30,
        "built": built,
    }
    b.add(
        "changelog / RocksDB value (faust json)",
        None,
        None,
        mix,
        mix * TARGET / 2**30,
        "extrapolated from one value per kind",
        None,
        None,
    )
    for r in built:
        per = r["rss_growth"] / r["n"]
        how = "measured" if r["n"] == TARGET else f"extrapolated from {r['n']:,}"
        label = {
            "dict": "faust memory store (decoded dict per key)",
            "bytes": "compact JSON bytes per key",
        }[r["form"]]
        b.add(
            label,
            r["n"],
            mib(r["rss_growth"]),
            per,
            per * TARGET / 2**30,
            how,
            r["seconds"],
            r["gc_seconds"],
        )
        data[f"{r['form']}_per_ircc"] = per
        data[f"{r['form']}_1m_gib"] = per * TARGET / 2**30
    b.notes += [
        "RSS growth = VmRSS after - before building, in a fresh process; includes dict "
        "overhead of the table (and, for dict, faust's key -> partition map); full GC s = one "
        "gc.collect() over the built table (a pause the monitor's loop would see)",
        "not included: the citations table (one entry per citing CPC, with its body), findings, "
        "due keys, and the broker's copy of every changelog write (memory storage, no "
        "compaction)",
    ]
    return Outcome("state", [t, b], data)


def _main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=2, metavar=("FORM", "N"))
    args = parser.parse_args()
    if args.worker:
        form, n = args.worker[0], int(args.worker[1])
        sys.stdout.write(json.dumps(worker(form, n)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())

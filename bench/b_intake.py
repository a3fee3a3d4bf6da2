"""intake: ``POST /v1/communiques`` requests/s against reference servers, same run.

Targets, each a separate process served by ``shared.runner.serve`` (same uvicorn settings,
one process, one event loop):
- ``bare``: plain FastAPI, a handler taking the JSON body as a dict (``bench.bare_app``);
- ``bare+plumbing``: the same handler in an app built by ``shared.service.create_app``
  (correlation-id and metrics middlewares, problem handlers);
- ``checkpoint``: the real service (JWT check, record validation, SQLite insert of the
  communiqué + outbox row, outbox relay to Kafka), with only the registry and the broker
  running beside it (the notifier and the monitor are stopped so nothing downstream competes
  for the two cores).
Every request carries the same CPC body (a fresh ``header.identifier`` each time) and the
operator's bearer token. Load: closed loop with N concurrent connections for a fixed time,
after a short warm-up; ``wrk`` (Debian package, one thread) when installed, else an async
httpx client in this process (``--loadgen`` chooses).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench import profiling
from bench.common import LoadMeter, Outcome, Table, cpu_seconds, ms, pct, progress
from bench.scenario import auth, cpc_body
from bench.stack import Proc
from tools.ports import free_port

WRK_SCRIPT = """
local counter = 0
local prefix = "{prefix}"
local headers = {{}}
headers["Content-Type"] = "application/json"
headers["Authorization"] = "Bearer {token}"
local template = [==[{template}]==]
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v1/communiques", headers, string.format(template, prefix .. counter))
end
"""
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", out):
        res["requests"] = int(m.group(1))
    for p in ("50", "99"):
        if m := re.search(rf"^\s+{p}%\s+(\S+)", out, re.M):
            res[f"p{p}_ms"] = ms(_seconds(m.group(1)))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["errors"] = int(m.group(1)) if m else 0
    if m := re.search(r"Socket errors:.*", out):
        res["socket_errors"] = m.group(0)
    return res


async def wrk(
    url: str, token: str, body: dict[str, Any], conns: int, seconds: float, state: Path
) -> dict[str, Any]:
    ident = body["header"]["identifier"]
    template = json.dumps(body).replace("%", "%%").replace(json.dumps(ident), '"%s"')
    script = state / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(
        WRK_SCRIPT.format(prefix=f"WRK-{uuid.uuid4().hex[:10]}-", token=token, template=template)
    )
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "--timeout",
        "30s",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, int(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    res = parse_wrk(text)
    if "rps" not in res:
        raise RuntimeError(f"wrk failed: {text[-1000:]}")
    return res


async def httpx_load(
    url: str, token: str, body: dict[str, Any], conns: int, seconds: float
) -> dict[str, Any]:
    lat: list[float] = []
    errors = 0
    prefix = f"HTX-{uuid.uuid4().hex[:10]}-"
    counter = 0
    end = time.perf_counter() + seconds
    headers = auth(token)
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one() -> None:
            nonlocal counter, errors
            while time.perf_counter() < end:
                counter += 1
                payload = {**body, "header": {**body["header"], "identifier": f"{prefix}{counter}"}}
                t0 = time.perf_counter()
                try:
                    resp = await client.post(url, json=payload, headers=headers)
                    if resp.status_code >= 300:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(conns)))
        wall = time.perf_counter() - t0
    return {
        "rps": len(lat) / wall,
        "requests": len(lat),
        "p50_ms": ms(pct(lat, 50)),
        "p99_ms": ms(pct(lat, 99)),
        "errors": errors,
    }


def _loadgen(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "httpx"
    if choice == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("wrk not installed (apt-get install wrk)")
    return choice


async def _ready(url: str, proc: Proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not ready")
            await asyncio.sleep(0.1)


async def run(session: Any) -> Outcome:
    gen = _loadgen(session.loadgen)
    # The target is stated at 1 and 16 connections, so a quick run measures both.
    conns_list = [1, 16] if session.quick else [1, 16, 64]
    secs = 2.0 if session.quick else 15.0
    warm = 1.0 if session.quick else 2.0
    stack = session.stack
    if stack is not None:
        for name in ("notifier", "monitor"):
            if name in stack.procs:
                progress(f"intake: stopping {name} so nothing downstream competes for CPU")
                stack.stop_service(name)
    stack = await session.stack_with(["registry", "checkpoint"])
    world = await session.world_for(stack, 1)
    cp_url = stack.url("checkpoint")
    async with httpx.AsyncClient(base_url=cp_url, timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            resp = await client.post(
                "/v1/communiques", json=world.cpc(), headers=auth(world.operator)
            )
            if resp.status_code == 201:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"checkpoint refuses CPCs: {resp.status_code} {resp.text}")
            await asyncio.sleep(0.3)
    state = session.state / "intake"
    state.mkdir(parents=True, exist_ok=True)
    env = stack.env()
    bare: dict[str, tuple[str, Proc]] = {}
    for name, extra in (("bare", []), ("bare+plumbing", ["--plumbing"])):
        port = free_port()
        proc = Proc(
            name,
            [sys.executable, "-m", "bench.bare_app", "--port", str(port), *extra],
            env,
            state / f"{name}.log",
        )
        proc.start()
        bare[name] = (f"http://127.0.0.1:{port}", proc)
    targets: dict[str, tuple[str, int]] = {}
    try:
        for name, (url, proc) in bare.items():
            await _ready(url, proc)
            targets[name] = (url, proc.pid)
        targets["checkpoint"] = (cp_url, stack.procs["checkpoint"].pid)
        body = cpc_body(world.checkpoint_id, world.irccs[0], world.holder_id)
        results: list[dict[str, Any]] = []
        for conns in conns_list:
            for name, (url, pid) in targets.items():
                progress(f"intake: {name}, {conns} connections, {secs:.0f}s ({gen})")
                target = f"{url}/v1/communiques"

                async def load(seconds: float, target: str = target, conns: int = conns) -> Any:
                    if gen == "wrk":
                        return await wrk(target, world.operator, body, conns, seconds, state)
                    return await httpx_load(target, world.operator, body, conns, seconds)

                await session.gate(f"intake {name} x{conns}")
                await load(warm)
                c0, t0 = cpu_seconds(pid) or 0.0, time.monotonic()
                meter = LoadMeter()
                res = await load(secs)
                wall = time.monotonic() - t0
                res["load"] = meter.stop()
                res.update(
                    target=name,
                    conns=conns,
                    server_cpu_pct=100 * ((cpu_seconds(pid) or 0.0) - c0) / wall,
                )
                results.append(res)
        profile: dict[str, Any] | None = None
        if session.profile and profiling.pyspy():
            seconds = 3.0 if session.quick else 10.0
            progress(f"intake: py-spy on the checkpoint under 16 connections for {seconds:.0f}s")
            url, pid = targets["checkpoint"]
            background = asyncio.create_task(
                wrk(f"{url}/v1/communiques", world.operator, body, 16, seconds + 2, state)
                if gen == "wrk"
                else httpx_load(f"{url}/v1/communiques", world.operator, body, 16, seconds + 2)
            )
            await asyncio.sleep(1)
            files = await profiling.record({"checkpoint": pid}, seconds, state / "profile")
            await background
            profile = {"seconds": seconds, "summary": profiling.summarise(files["checkpoint"])}
    finally:
        for _, proc in bare.values():
            proc.stop(10)
    t = Table(
        f"intake: POST /v1/communiques, closed loop ({gen}"
        f"{', 1 thread' if gen == 'wrk' else ' in the benchmark process'})",
        [
            "target",
            "connections",
            "req/s",
            "p50 ms",
            "p99 ms",
            "non-2xx",
            "server CPU %",
            "other processes CPU %",
            "vs bare",
        ],
    )
    ratios = []
    for conns in conns_list:
        rows = {r["target"]: r for r in results if r["conns"] == conns}
        base = rows["bare"]["rps"]
        for name in targets:
            r = rows[name]
            t.add(
                name,
                conns,
                r["rps"],
                r.get("p50_ms"),
                r.get("p99_ms"),
                r["errors"],
                r["server_cpu_pct"],
                r["load"].get("other_pct"),
                r["rps"] / base if base else None,
            )
        ratios.append(
            (f"intake checkpoint / bare req/s, {conns} conns", rows["checkpoint"]["rps"] / base)
        )
        ratios.append(
            (
                f"intake checkpoint / bare+plumbing req/s, {conns} conns",
                rows["checkpoint"]["rps"] / rows["bare+plumbing"]["rps"],
            )
        )
    for r in results:
        if r.get("socket_errors"):
            t.notes.append(f"{r['target']} x{r['conns']}: {r['socket_errors']}")
    t.notes += [
        f"{secs:.0f}s per row after a {warm:.0f}s warm-up; same body (~{len(json.dumps(body))} "
        "bytes) and bearer token for every target; server CPU % = the target process only",
        "checkpoint: only registry + broker run beside it; its outbox relay publishes each "
        "cpc.published to Kafka inside the same process",
    ]
    tables = [t]
    if profile:
        tables += profiling.tables(
            {"checkpoint under intake load": profile["summary"]}, profile["seconds"], 100
        )
    data = {"loadgen": gen, "results": results, "ratios": ratios, "profile": profile}
    return Outcome("intake", tables, data)

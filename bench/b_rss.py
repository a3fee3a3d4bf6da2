"""rss: VmRSS of each service process and of the broker (and the sink), idle and under load.

The figures come from the pipeline run (sampled every 0.5 s from /proc/<pid>/status during
its idle window and each load level). Run alone, this runs the pipeline first.
"""

from __future__ import annotations

from typing import Any

from bench import b_pipeline
from bench.common import Outcome


async def run(session: Any) -> Outcome:
    if session.pipeline is None:
        await b_pipeline.run(session)
    data = session.pipeline
    table = b_pipeline.rss_table(data)
    rss = {
        "idle": {n: v.get("rss_last") for n, v in data["idle"].items()},
        "peak": {
            f"{lv['share']:.0%}": {n: v.get("rss_max") for n, v in lv["cpu"].items()}
            for lv in data["levels"]
        },
    }
    return Outcome("rss", [table], rss)

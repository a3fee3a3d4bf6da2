"""The SMTP sink as its own process, logging one line per delivered mail with its arrival time.

``python -m bench.sink --port P --log FILE``: ``tools.smtp_sink.SmtpSink`` (aiosmtpd, the same
server the tests use, parsing every message) whose ``record`` appends
``<unix time>\\t<X-ABSCH-Subject>\\t<X-ABSCH-Template>\\t<recipient>`` to FILE instead of
keeping the message. Running it outside the benchmark process keeps its CPU and the GIL
away from the load generator; the arrival time is taken here, not when the log is read.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tools.smtp_sink import ReceivedMail, SmtpSink


class TimingSink(SmtpSink):
    """An SmtpSink that writes a timing line per (message, recipient) and keeps nothing."""

    def __init__(self, log: Path, **kw: Any) -> None:
        super().__init__(**kw)
        self._fh = log.open("a", buffering=1)

    def record(self, mail: ReceivedMail, raw: bytes) -> None:
        line = (
            f"{time.time():.6f}\t{mail.header('X-ABSCH-Subject')}\t"
            f"{mail.header('X-ABSCH-Template')}\t{mail.recipient}\n"
        )
        with self._lock:
            self._fh.write(line)

    def stop(self) -> None:
        super().stop()
        self._fh.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="timing SMTP sink for benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sink = TimingSink(args.log, host=args.host, port=args.port)
    sink.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    done.wait()
    sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

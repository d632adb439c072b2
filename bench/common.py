"""What the benchmarks share: progress on stderr, and the guard that keeps them on this machine."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from urllib.parse import urlsplit


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loopback_only(base_url: str) -> str:
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    ok = host == "localhost"
    if not ok:
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
    if parts.scheme not in ("http", "https") or not ok:
        raise SystemExit(f"refusing to benchmark {base_url!r}: only loopback addresses (127.0.0.0/8, ::1, "
                         "localhost) are allowed")
    if parts.path not in ("", "/") or parts.query:
        raise SystemExit(f"--base-url takes scheme://host:port only, not {base_url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def run_client(coro):
    """Run a load-generating client on uvloop (installed with the server's uvicorn[standard]) when there is
    one: on this 2-core machine the client shares the CPU with the server it measures, and the stock
    event loop costs it a third more CPU per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)

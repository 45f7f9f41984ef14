"""The local server under overload, with and without the limit on predictions in flight,
side by side in one run (`make bench-serving` runs it; alone: `python -m bench.overload`).

Both servers are `python -m functions.api.server` (what `make serve` runs), one process each,
started together and loaded in turn (interleaved, alternating order per repetition):

- `limit` — the default: `API_MAX_IN_FLIGHT` (one per interpreter) running plus `API_MAX_QUEUE`
  waiting, the rest shed with 503 `overloaded` + `Retry-After`;
- `no limit` — `API_MAX_IN_FLIGHT=0`, the behaviour before the limit: every request queues.

Closed-loop keep-alive clients (1/8/32/64) post a 320x240 JPEG back to back for a few seconds.
A client that is shed waits as told (`Retry-After`, 1 s) before its next request: what a well
behaved client does (docs/api.md). A third case, the worst, has clients that ignore it and retry
at once (a busy loop of 503s, on the same 2 cores as the server). Reported per cell: answered
req/s (200s only), p50/p99 of the answered requests' latency, and the number shed. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from typing import Any

from bench.serving import save_part, server, test_jpeg

LEVELS = (1, 8, 32, 64)
SERVERS = {"limit": {}, "no limit": {"API_MAX_IN_FLIGHT": "0"}}  # name -> extra environment
CASES = {  # name -> (server, whether clients wait the Retry-After of a 503)
    "limit (default)": ("limit", True),
    "no limit (before)": ("no limit", True),
    "limit, clients ignore Retry-After": ("limit", False),
}


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[bytes, bytes]]:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return int(lines[0].split(b" ", 2)[1]), headers


async def load(
    port: int, body: bytes, *, clients: int, seconds: float, wait: bool = True
) -> dict[str, Any]:
    """`clients` keep-alive connections posting `body` for `seconds`; a shed client waits its
    `Retry-After` before the next request (unless not `wait`)."""
    request = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answered: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    deadline = start + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                status, headers = await _exchange(reader, writer, request)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    answered.append((time.perf_counter() - sent) * 1000)
                if headers.get(b"connection") == b"close":
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if status == 503 and wait:
                    pause = float(headers.get(b"retry-after", b"1"))
                    await asyncio.sleep(min(pause, max(0.0, deadline - time.perf_counter())))
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    answered.sort()
    p99 = answered[min(len(answered) - 1, int(len(answered) * 0.99))] if answered else None
    return {
        "rps": len(answered) / elapsed,
        "p50_ms": statistics.median(answered) if answered else None,
        "p99_ms": p99,
        "answered": len(answered),
        "shed": statuses.get(503, 0),
        "other": sum(n for s, n in statuses.items() if s not in (200, 503)),
    }


def run(model_uri: str, body: bytes, *, reps: int = 1, seconds: float = 5.0) -> dict[str, Any]:
    """Every variant at every level, interleaved; medians over `reps`."""
    env = {"MODEL_URI": model_uri, "API_POOL_SIZE": "1", "API_NUM_THREADS": "2"}
    runs: dict[str, dict[int, list[dict]]] = {v: {c: [] for c in LEVELS} for v in CASES}
    with contextlib.ExitStack() as stack:
        ports = {
            name: stack.enter_context(server(None, {**env, **extra}))
            for name, extra in SERVERS.items()
        }
        for port in ports.values():  # warm-up
            asyncio.run(load(port, body, clients=8, seconds=1.0))
        for clients in LEVELS:
            for rep in range(reps):
                order = list(CASES) if rep % 2 == 0 else list(reversed(CASES))
                for name in order:
                    target, wait = CASES[name]
                    result = asyncio.run(
                        load(ports[target], body, clients=clients, seconds=seconds, wait=wait)
                    )
                    runs[name][clients].append(result)
                    print(
                        f"  {name:<33} c={clients:<2} rep {rep + 1}: {result['rps']:6.1f} req/s"
                        f"  p50 {result['p50_ms'] or 0:7.1f} ms  p99 {result['p99_ms'] or 0:7.1f}"
                        f" ms  shed {result['shed']}",
                        flush=True,
                    )
    summary: dict[str, Any] = {}
    for name, by_clients in runs.items():
        summary[name] = {}
        for clients, results in by_clients.items():
            cell = {
                key: round(statistics.median(r[key] or 0 for r in results), 2)
                for key in ("rps", "p50_ms", "p99_ms")
            }
            cell |= {key: sum(r[key] for r in results) for key in ("answered", "shed", "other")}
            summary[name][str(clients)] = cell
    return {
        "levels": list(LEVELS),
        "seconds_per_cell": seconds,
        "repetitions": reps,
        "server": "python -m functions.api.server, API_POOL_SIZE=1, API_NUM_THREADS=2",
        "client": "closed loop, keep-alive; after a 503 the client waits its Retry-After "
        "(but in the `ignore Retry-After` case)",
        "results": summary,
    }


def table(result: dict[str, Any]) -> str:
    cells = result["results"]
    best = max(cell["rps"] for by in cells.values() for cell in by.values())
    # "vs best": against the best cell of any case, the target's yardstick
    lines = [
        "| server | clients | answered req/s | vs best | p50 ms | p99 ms | shed (503) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, by_clients in cells.items():
        for clients, cell in by_clients.items():
            lines.append(
                f"| {name} | {clients} | {cell['rps']:.1f} | {cell['rps'] / best:.0%} | "
                f"{cell['p50_ms']:.1f} | {cell['p99_ms']:.1f} | {cell['shed']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument("--model", default=None, help="registry URI (default: the bundled)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv or [])
    from wastesort.classifier import default_model_uri

    result = run(
        args.model or default_model_uri(), test_jpeg(), reps=args.reps, seconds=args.seconds
    )
    save_part("overload", result)
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A/B of two gateway checkouts: the same rows on both, interleaved, requests per CPU second.

Usage: ``python bench/ab.py --a /path/to/main-checkout [--b .] [--rows sessions,keepalive]``.
Each checkout gets its own gateways (an https one with session tickets, one without, and a
plain one with 1,000 docker domains), all pinned to core 1 as in ``run.py``; wrk runs on
core 0. Rounds alternate which checkout goes first. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # the benchmark's own helpers, next to this script

DOCKER = {"User-Agent": run.DOCKER_UA}
ROWS = {
    "sessions": run.Row("https handshakes, default sessions", run.TLS_HOST, run.DOCKER_PATH,
                        307, [], DOCKER, tls=True, close=True),
    "full": run.Row("https handshakes, no resumption", run.TLS_HOST, run.DOCKER_PATH, 307, [],
                    DOCKER, tls=True, close=True, resume=False),
    "keepalive": run.Row("https 307 keep-alive", run.TLS_HOST, run.DOCKER_PATH, 307, [],
                         DOCKER, tls=True),
    "docker": run.Row("docker 307", run.docker_host(500), run.DOCKER_PATH, 307, [], DOCKER),
    "close": run.Row("docker 307, Connection: close", run.docker_host(500), run.DOCKER_PATH,
                     307, [], DOCKER, close=True),
    "file": run.Row("file-v1 307 + query", run.FILE_HOST, run.FILE_PATH, 307, []),
    "page": run.Row("python page 200", run.PYPI_HOST, run.PYPI_PATH, 200, []),
    "404": run.Row("unmatched 404", run.UNKNOWN_HOST, "/v2/", 404, []),
}


def main() -> int:
    """Start both checkouts' gateways, check the rows, run them interleaved, print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="checkout A (e.g. main)")
    parser.add_argument("--b", type=Path, default=run.REPO, help="checkout B (default: this)")
    parser.add_argument("--rows", default="sessions,keepalive,docker",
                        help="comma-separated: " + ",".join(ROWS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    rows = [ROWS[name] for name in args.rows.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="scarfgw-ab-"))
    atexit.register(shutil.rmtree, tmp, True)
    atexit.register(run.stop_children)
    tls = run.make_certificate(tmp / "cert", run.TLS_HOST)
    servers: dict[tuple[str, bool], run.Server] = {}
    for label, source in (("A", args.a), ("B", args.b)):
        if any(row.tls for row in rows):
            https = run.start_gateway(tmp, f"https-{label}", 1, sys.executable, source, tls)
            https.serve_fresh(run.start_gateway(tmp, f"fresh-{label}", 1, sys.executable, source,
                                                tls, tickets=False))
            servers[label, True] = https
        if not all(row.tls for row in rows):
            servers[label, False] = run.start_gateway(tmp, f"plain-{label}", 1000,
                                                      sys.executable, source)
    scripts = {}
    for index, row in enumerate(rows):
        for label in ("A", "B"):
            server = servers[label, row.tls]
            run.check(row, server, dict(row.headers), {}, tls if row.tls else None)
            scripts[row.name, label] = (run.wrk_url(row, server), run.lua_script(
                tmp / f"row{index}{label}.lua", row, dict(row.headers)))
    print(f"load average before: {os.getloadavg()}", flush=True)
    results: dict[tuple[str, str], list[run.Sample]] = {}
    for round_no in range(args.rounds):
        for row in rows:
            for label in ("A", "B") if round_no % 2 == 0 else ("B", "A"):
                pids = servers[label, row.tls].all_pids()
                before = run.cpu_seconds(pids)
                sample = run.run_wrk(*scripts[row.name, label], args.duration)
                used = run.cpu_seconds(pids) - before
                sample.per_cpu_s = sample.rps * args.duration / used if used > 0 else 0.0
                results.setdefault((row.name, label), []).append(sample)
    print(f"A {args.a} ({run.build_kind(args.a)}), B {args.b} ({run.build_kind(args.b)}); "
          f"{args.rounds} x {args.duration:g} s, medians; load average after: "
          f"{os.getloadavg()}")
    print(f"{'row':32} {'req/s A':>9} {'req/s B':>9} {'/CPU s A':>9} {'/CPU s B':>9} {'B/A':>6}")
    for row in rows:
        a, b = (results[row.name, label] for label in ("A", "B"))
        per_a = statistics.median(s.per_cpu_s for s in a)
        per_b = statistics.median(s.per_cpu_s for s in b)
        print(f"{row.name:32} {statistics.median(s.rps for s in a):9.0f} "
              f"{statistics.median(s.rps for s in b):9.0f} {per_a:9.0f} {per_b:9.0f} "
              f"{per_b / per_a if per_a else 0:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

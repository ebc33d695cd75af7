"""Worker scaling: scarfgw with 1 and with 2 worker processes on the docker 307 row.

Usage: ``python bench/workers.py [--quick] [--python PYTHON] [--threads N]``.
The gateway (1,000 docker domains, events to a JSONL sink, as in bench/run.py) and wrk
share both cores (``taskset -c 0,1``), so besides req/s the script reports the CPU seconds
the gateway's process tree and wrk used, req per gateway-CPU-second, and from that the
scaling two dedicated cores would give. 1 and 2 workers are interleaved, figures are
medians over the rounds. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from run import (
    CONNECTIONS,
    REPO,
    Server,
    check,
    cpu_seconds,
    lua_script,
    make_rows,
    request_headers,
    start_gateway,
    stop_children,
    wrk_rps_errors,
)

CORES = "0,1"
WORKER_COUNTS = (1, 2)


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this script's waited-for children (wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def connection_spread(server: Server) -> list[int]:
    """Established connections on the gateway's port held by each process of its tree."""
    inodes: set[str] = set()
    port = f":{server.port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(port) and fields[3] == "01":  # local port, ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    spread: list[int] = []
    for pid in server.pids():
        count = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    count += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
                except OSError:
                    continue
        except OSError:
            pass
        spread.append(count)
    return spread


@dataclass
class Run:
    """One wrk run against one gateway."""

    rps: float
    requests: int
    errors: int
    gateway_cpu: float  # CPU seconds of the gateway's process tree during the run
    wrk_cpu: float
    spread: list[int]  # connections per gateway process, sampled mid-run

    @property
    def efficiency(self) -> float:
        """Requests per gateway CPU second."""
        return self.requests / self.gateway_cpu if self.gateway_cpu else 0.0


def measure(server: Server, script: Path, duration: float, threads: int) -> Run:
    """wrk (``threads`` threads, CONNECTIONS connections) on both cores for ``duration``
    seconds, with the CPU the gateway's tree and wrk used meanwhile."""
    argv = ["taskset", "-c", CORES, "wrk", f"-t{threads}", f"-c{CONNECTIONS}",
            f"-d{duration:g}s", "--timeout", "5s", "-s", str(script),
            f"http://127.0.0.1:{server.port}/"]
    gateway_before = cpu_seconds(server.pids())
    wrk_before = children_cpu_seconds()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    time.sleep(duration / 2)
    spread = connection_spread(server)
    output, _ = proc.communicate(timeout=duration + 30)
    gateway_cpu = cpu_seconds(server.pids()) - gateway_before
    wrk_cpu = children_cpu_seconds() - wrk_before
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{output}")
    rps, errors = wrk_rps_errors(output)
    requests = re.search(r"(\d+) requests in", output)
    return Run(rps, int(requests.group(1)) if requests else 0, errors, gateway_cpu, wrk_cpu,
               spread)


def print_table(results: dict[int, list[Run]], duration: float) -> None:
    """Per worker count: medians of req/s, CPU, efficiency; then the scaling ratios."""
    print(f"{'workers':>7} {'req/s':>8} {'runs':>20} {'gw CPU s':>8} {'gw cores':>8} "
          f"{'wrk CPU s':>9} {'req/gw-CPU-s':>12} {'errors':>6}  connections per process")
    rps: dict[int, float] = {}
    efficiency: dict[int, float] = {}
    for workers, runs in results.items():
        rps[workers] = statistics.median(r.rps for r in runs)
        efficiency[workers] = statistics.median(r.efficiency for r in runs)
        gateway_cpu = statistics.median(r.gateway_cpu for r in runs)
        wrk_cpu = statistics.median(r.wrk_cpu for r in runs)
        errors = sum(r.errors for r in runs)
        each = "/".join(f"{r.rps / 1000:.1f}k" for r in runs)
        spread = " | ".join("/".join(map(str, r.spread)) for r in runs)
        print(f"{workers:7d} {rps[workers]:8.0f} {each:>20} {gateway_cpu:8.2f} "
              f"{gateway_cpu / duration:8.2f} {wrk_cpu:9.2f} {efficiency[workers]:12.0f} "
              f"{errors:6d}  {spread}")
    efficiency_ratio = efficiency[2] / efficiency[1]
    print(f"raw scaling (req/s 2w / 1w):                 {rps[2] / rps[1]:.2f}")
    print(f"efficiency ratio (req/CPU-s 2w / 1w):        {efficiency_ratio:.2f}")
    print(f"projected 2-core scaling (2 x efficiency):   {2 * efficiency_ratio:.2f}")


def main(argv: list[str] | None = None) -> int:
    """Start a 1-worker and a 2-worker gateway, check them, run interleaved rounds, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 3 s runs (default: 3 rounds of 10 s)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--duration", type=float, help="override seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter whose venv provides twistd (e.g. a PyPy venv)")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="scarfgw checkout to run (PYTHONPATH)")
    parser.add_argument("--domains", type=int, default=1000, help="docker domains in the config")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per gateway")
    parser.add_argument("--keep-temp", action="store_true", help="keep configs and logs")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (3.0 if args.quick else 10.0)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (apt-get install -y wrk util-linux)")

    tmp = Path(tempfile.mkdtemp(prefix="scarfgw-workers-"))
    if not args.keep_temp:
        atexit.register(shutil.rmtree, tmp, True)
    atexit.register(stop_children)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} cores", flush=True)
    row = make_rows(args.domains)[0]  # docker 307
    gateways: dict[int, tuple[Server, Path]] = {}
    reference: dict[str, str] = {}
    for workers in WORKER_COUNTS:
        print(f"starting scarfgw, {workers} worker(s), {args.domains:,} docker domains ...",
              flush=True)
        server = start_gateway(tmp, f"scarfgw-{workers}w", args.domains, args.python,
                               args.source, workers=workers, cores=CORES)
        headers = request_headers(row, server)
        check(row, server, headers, reference)
        gateways[workers] = (server, lua_script(tmp / f"{workers}w.lua", row, headers))
        if args.warmup > 0:
            measure(server, gateways[workers][1], args.warmup, args.threads)

    results: dict[int, list[Run]] = {workers: [] for workers in WORKER_COUNTS}
    for round_no in range(rounds):
        print(f"round {round_no + 1}/{rounds}, load average {os.getloadavg()}", flush=True)
        for workers, (server, script) in gateways.items():
            results[workers].append(measure(server, script, duration, args.threads))
    print(f"\n{row.name}: wrk -t{args.threads} -c{CONNECTIONS}, gateway and wrk on cores "
          f"{CORES}, {rounds} x {duration:g} s, median; python {args.python}; source "
          f"{args.source}; load average after: {os.getloadavg()}")
    print_table(results, duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())

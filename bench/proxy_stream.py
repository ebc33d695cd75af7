"""Streaming throughput of scarfgw's registry proxy vs a tuned nginx proxy_pass, same run.

An origin nginx (sendfile, core 0) serves one random 512 MiB blob; the proxy under test (nginx
or ``twistd scarfgw``) runs on core 1; curl downloads on core 0. Then a client limited to
20 MB/s downloads through scarfgw while its RSS is sampled from /proc. Prints a table.

    python bench/proxy_stream.py [--size-mib 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from run import REPO, free_port

PATH = "/v2/library/big/blobs/sha256:" + "0" * 64
NGINX_COMMON = """
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  {body}
}}
"""
ORIGIN = """server {{ listen 127.0.0.1:{port}; sendfile on; root {root};
  location / {{ try_files /blob =404; }} }}"""
TUNED_PROXY = """upstream origin {{ server 127.0.0.1:{origin}; keepalive 8; }}
server {{ listen 127.0.0.1:{port};
  location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_buffering on; proxy_buffers 32 64k; proxy_buffer_size 64k;
    proxy_max_temp_file_size 0; }} }}"""


def wait_for(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers at all (giving up if ``process`` exits)."""
    for _ in range(300):
        if process is not None and process.poll() is not None:
            sys.exit(f"{url}: the server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{url} did not answer")


@contextmanager
def nginx(folder: Path, body: str, core: int) -> Iterator[None]:
    """nginx in the foreground with its own prefix, pinned to ``core``."""
    folder.mkdir()
    user = "user root;" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(NGINX_COMMON.format(user=user, dir=folder, body=body))
    process = subprocess.Popen(
        ["taskset", "-c", str(core), "nginx", "-p", str(folder), "-c", str(folder / "nginx.conf"),
         "-g", "daemon off;"])
    try:
        yield
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def scarfgw(folder: Path, port: int, origin: int, core: int) -> Iterator[int]:
    """``twistd -n scarfgw`` proxying library/big to the origin; yields its pid."""
    folder.mkdir()
    config = {
        "listen": {"http": f"tcp:{port}:interface=127.0.0.1", "admin": None, "insights": None},
        "rules": [{"type": "docker-v1", "domain": "127.0.0.1", "repository-name": "library/big",
                   "registry": "origin.test", "package-id": "big", "always-proxy": True}],
        "proxy": {"upstreams": {"origin.test": f"http://127.0.0.1:{origin}"}},
        "events": {"spool_dir": str(folder / "spool"),
                   "sinks": [{"type": "jsonl", "path": str(folder / "events.jsonl")}]},
    }
    (folder / "scarfgw.yaml").write_text(json.dumps(config))
    twistd = Path(sys.executable).with_name("twistd")
    process = subprocess.Popen(
        ["taskset", "-c", str(core), str(twistd), "--pidfile=", "-n",
         "--logfile", str(folder / "twistd.log"), "scarfgw", "--config",
         str(folder / "scarfgw.yaml")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=folder)
    try:
        wait_for(f"http://127.0.0.1:{port}/", process)
        yield process.pid
    finally:
        process.terminate()
        process.wait(10)


def download_mib_s(port: int, core: int) -> float:
    """One full download with curl; MiB/s."""
    speed = subprocess.run(
        ["taskset", "-c", str(core), "curl", "-sf", "-o", "/dev/null", "-w", "%{speed_download}",
         f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True, check=True).stdout
    return float(speed) / (1 << 20)


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of ``pid`` from /proc/<pid>/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def slow_client(port: int, pid: int, seconds: float) -> tuple[float, float, float, float]:
    """RSS before, peak during, and 2 s after a 20 MB/s client; and MiB it received."""
    before = rss_mib(pid)
    client = subprocess.Popen(
        ["curl", "-s", "-o", "/dev/null", "--limit-rate", "20M", "--max-time", str(seconds),
         "-w", "%{size_download}", f"http://127.0.0.1:{port}{PATH}"],
        stdout=subprocess.PIPE, text=True)
    peak = before
    while client.poll() is None:
        peak = max(peak, rss_mib(pid))
        time.sleep(0.05)
    received = int(float(client.stdout.read() if client.stdout else 0)) / (1 << 20)
    time.sleep(2)
    return before, peak, rss_mib(pid), received


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slow-seconds", type=float, default=10.0)
    args = parser.parse_args()
    for binary in ("nginx", "curl", "taskset"):
        if shutil.which(binary) is None:
            sys.exit(f"{binary} is required")
    with tempfile.TemporaryDirectory(prefix="scarfgw-bench-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)
        (folder / "www").mkdir()
        with (folder / "www" / "blob").open("wb") as blob:
            for _ in range(args.size_mib):
                blob.write(os.urandom(1 << 20))
        origin, proxy, gateway = free_port(), free_port(), free_port()
        with nginx(folder / "origin", ORIGIN.format(port=origin, root=folder / "www"), 0), \
                nginx(folder / "proxy", TUNED_PROXY.format(origin=origin, port=proxy), 1), \
                scarfgw(folder / "scarfgw", gateway, origin, 1) as pid:
            wait_for(f"http://127.0.0.1:{origin}/")
            wait_for(f"http://127.0.0.1:{proxy}/")
            download_mib_s(gateway, 0)
            results: dict[str, list[float]] = {"direct": [], "nginx": [], "scarfgw": []}
            for _ in range(args.runs):
                results["direct"].append(download_mib_s(origin, 1))
                results["nginx"].append(download_mib_s(proxy, 0))
                results["scarfgw"].append(download_mib_s(gateway, 0))
            fast_peak = rss_mib(pid, "VmHWM")
            before, peak, after, received = slow_client(gateway, pid, args.slow_seconds)
    nginx_median = statistics.median(results["nginx"])
    print(f"{args.size_mib} MiB blob, loopback, median of {args.runs} (MiB/s)")
    print(f"{'path':<34}{'median':>9}  {'runs':<26}{'ratio':>6}")
    for name, label in (("direct", "direct from origin nginx"),
                        ("nginx", "nginx proxy_pass (tuned)"), ("scarfgw", "scarfgw (twistd)")):
        runs = results[name]
        median = statistics.median(runs)
        shown = "/".join(f"{value:.0f}" for value in runs)
        ratio = "" if name == "direct" else f"{median / nginx_median:.2f}"
        print(f"{label:<34}{median:>9.0f}  {shown:<26}{ratio:>6}")
    print(f"scarfgw peak RSS with fast clients (VmHWM): {fast_peak:.1f} MiB")
    print(f"slow client (20 MB/s, {args.slow_seconds:.0f} s, {received:.0f} MiB received): "
          f"RSS before {before:.1f} MiB, peak {peak:.1f} MiB, 2 s after it left {after:.1f} MiB")


if __name__ == "__main__":
    main()

"""Load benchmark: scarfgw against nginx and Caddy doing the same job, in the same run.

Usage: ``python bench/run.py [--quick | --full] [--https] [--python PYTHON] [--json FILE]``.
wrk runs on core 0, every server on core 1; rows and servers are interleaved, each
figure is the median over the rounds. ``--https`` adds the TLS rows (keep-alive; one
handshake per request without session resumption, and with each server's default session
handling), all three servers serving the same self-signed certificate.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONNECTIONS = 64
DOCKER_PATH = "/v2/library/hello/manifests/latest"
DOCKER_UA = "docker/27.0"
REGISTRY = "registry-1.docker.io"
FILE_HOST = "get.example.test"
FILE_PATH = "/download/tool-1.2.0-linux-amd64.tar.gz?ref=readme&utm_source=bench"
PYPI_HOST = "pypi.example.test"
PYPI_PATH = "/simple/example-tool/"
UNKNOWN_HOST = "unknown.example.test"
PACKAGE_ID = "3f1c2a52-0000-4000-8000-000000000001"
FILE_RULE = {
    "type": "file-v1",
    "domain": FILE_HOST,
    "incoming-path": "/download/{name}-{version}-{os}-{arch}.tar.gz",
    "outgoing-url": "https://github.com/example/{name}/releases/download/v{version}/"
                    "{name}-{version}-{os}-{arch}.tar.gz",
    "package-id": PACKAGE_ID,
}
PYTHON_RULE = {
    "type": "python-v1",
    "domain": PYPI_HOST,
    "package-name": "example-tool",
    "file-name": "example_tool-1.0.0-py3-none-any.whl",
    "version": "1.0.0",
    "backend-url": "https://files.example.test/example_tool-1.0.0-py3-none-any.whl",
    "hash-value": {"type": "sha256", "hash": "0" * 64},
    "requires-python": ">=3.9",
    "package-id": PACKAGE_ID,
}
START_TIMEOUT = 180.0
TLS_HOST = "cr0.example.test"  # = docker_host(0): the one domain of the scarfgw-tls gateway
CERT_LIFETIME_DAYS = 90  # renewal (by lifetime) is due only after 60 days: nothing is ordered

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_children: list[subprocess.Popen[bytes]] = []


def docker_host(index: int) -> str:
    """The ``index``-th docker domain of a generated config."""
    return f"cr{index}.example.test"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TLSFiles:
    """The benchmark's certificate: PEM files and the DER every server must present."""

    cert: Path
    key: Path
    der: bytes


def make_certificate(folder: Path, host: str) -> TLSFiles:
    """A self-signed ECDSA P-256 certificate for ``host`` (as an ACME CA would issue)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_LIFETIME_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(folder / "fullchain.pem", folder / "privkey.pem",
                     cert.public_bytes(serialization.Encoding.DER))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o644)  # nginx/caddy read it; the gateway's own copy is 0600
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def spawn(argv: list[str], log: Path, cores: str = "1", **kwargs: object
          ) -> subprocess.Popen[bytes]:
    """Start a server pinned to ``cores`` (taskset list), in its own session, logging to
    ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # type: ignore[call-overload]
            ["taskset", "-c", cores, *argv], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, **kwargs,
        )
    _children.append(proc)
    return proc


def stop_children() -> None:
    """Terminate every server this script started (their whole process groups)."""
    for proc in _children:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in _children:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    _children.clear()


def _client_context() -> ssl.SSLContext:
    """TLS client context without verification (check() compares the served certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_connect(port: int, host: str, ctx: ssl.SSLContext,
                session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:``port`` with SNI ``host``."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return ctx.wrap_socket(raw, server_hostname=host, session=session)
    except BaseException:
        raw.close()
        raise


def fetch(port: int, host: str, path: str, headers: dict[str, str] | None = None,
          tls: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One GET on 127.0.0.1:``port`` (over TLS with SNI ``host``): status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        if tls:
            conn.sock = tls_connect(port, host, _client_context())
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_until_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until ``port`` answers HTTP; fail if the process exits or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); see {log}:\n{log.read_text()}")
        try:
            fetch(port, UNKNOWN_HOST, "/")
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not come up in {START_TIMEOUT:.0f} s; see {log}")


@dataclass
class Server:
    """A running server under test."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    tls_port: int | None = None  # the HTTPS listener, with --https: default session handling
    fresh_port: int | None = None  # the HTTPS listener that never resumes a session
    companions: list[Server] = field(default_factory=list)  # processes serving fresh_port

    def pids(self) -> list[int]:
        """The server's process and all its descendants (e.g. the gateway's workers)."""
        return [self.proc.pid, *_descendants(self.proc.pid)]

    def all_pids(self) -> list[int]:
        """:meth:`pids` of this server and of its companions."""
        return [pid for server in (self, *self.companions) for pid in server.pids()]

    def serve_fresh(self, companion: Server) -> None:
        """Let ``companion``'s HTTPS listener (resumption off) be this server's fresh_port."""
        self.fresh_port = companion.tls_port
        self.companions.append(companion)

    def rss_mib(self) -> float:
        """Resident memory of the server's process tree, in MiB."""
        total = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"VmRSS:\s+(\d+) kB", status)
            total += int(match.group(1)) if match else 0
        return total / 1024


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` from /proc/<pid>/stat, in seconds (gone processes: 0)."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # fields 3.. of proc(5)
        ticks += int(fields[11]) + int(fields[12])  # utime (14), stime (15)
    return ticks / CLOCK_TICKS


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = [int(child) for child in children]
    return found + [grand for child in found for grand in _descendants(child)]


def start_gateway(tmp: Path, name: str, domains: int, python: str, source: Path,
                  tls: TLSFiles | None = None, workers: int = 1, cores: str = "1",
                  insights: bool = False, tickets: bool = True) -> Server:
    """``twistd -n scarfgw`` with ``domains`` docker domains plus the file and python rules,
    ``workers`` processes, pinned to ``cores``; ``insights``: its listener on (following the
    events into DuckDB), else off.

    With ``tls``: an https listener too, and only the docker rule of TLS_HOST, whose
    certificate is put into the gateway's TLS storage before it starts (the ACME directory
    is unreachable: a valid stored certificate is served and nothing is ordered). Without
    ``tickets``, ``tls.session_tickets: false``: no session is ever resumed.
    """
    port = free_port()
    workdir = tmp / name
    workdir.mkdir()
    hosts = [TLS_HOST] if tls else [docker_host(i) for i in range(domains)]
    rules: list[dict[str, object]] = [
        {"type": "docker-v1", "domain": host, "repository-name": "library/hello",
         "registry": REGISTRY, "package-id": PACKAGE_ID}
        for host in hosts
    ]
    tls_port = free_port() if tls else None
    config: dict[str, object] = {
        "workers": workers,
        "listen": {"http": f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                   "https": f"tcp:{tls_port}:interface=127.0.0.1:backlog=1024" if tls else None,
                   "admin": f"tcp:{free_port()}:interface=127.0.0.1",
                   "insights": f"tcp:{free_port()}:interface=127.0.0.1" if insights else None},
        "rules": rules if tls else [*rules, FILE_RULE, PYTHON_RULE],
        "events": {"spool_dir": str(workdir / "spool"),
                   "sinks": [{"type": "jsonl", "path": str(workdir / "events.jsonl")}]},
        "insights": {"duckdb": {"path": str(workdir / "insights.duckdb")}},
    }
    if tls:
        storage = workdir / "tls"
        folder = storage / "certificates" / TLS_HOST
        folder.mkdir(parents=True)
        key = folder / "privkey.pem"
        key.touch(0o600)
        key.write_bytes(tls.key.read_bytes())
        (folder / "fullchain.pem").write_bytes(tls.cert.read_bytes())
        config["tls"] = {"storage": str(storage), "verification": {"mode": "none"},
                         "acme": {"directory": "https://127.0.0.1:9/dir"},
                         **({} if tickets else {"session_tickets": False})}
    config_path = workdir / "scarfgw.json"
    config_path.write_text(json.dumps(config))
    twistd = Path(python).parent / "twistd"
    env = {**os.environ, "PYTHONPATH": str(source)}
    log = workdir / "twistd.log"
    proc = spawn([str(twistd), "-n", "--pidfile=", "scarfgw", "--config", str(config_path)],
                 log, cores=cores, cwd=workdir, env=env)
    wait_until_up(port, proc, log)
    return Server(name, port, proc, tls_port)


def _nginx_tls_server(port: int, tls: TLSFiles, sessions: str) -> str:
    """An nginx server block answering the docker request over TLS on ``port``."""
    return f"""
  server {{
    listen 127.0.0.1:{port} ssl backlog=1024; server_name {TLS_HOST};
    ssl_certificate {tls.cert}; ssl_certificate_key {tls.key}; ssl_protocols TLSv1.2 TLSv1.3;
    {sessions}
    location ~ ^/v2/library/hello/manifests/[^/]+$ {{
      if ($http_user_agent ~ "^docker/") {{ return 307 https://{REGISTRY}$request_uri; }}
      return 404;
    }}
    location / {{ return 404; }}
  }}"""


def start_nginx(tmp: Path, domains: int, www: Path, tls: TLSFiles | None = None) -> Server:
    """nginx, one worker, access log off: the same answers as the gateway.

    With ``tls``, two HTTPS listeners: one with nginx's default session handling (tickets
    on, no shared cache) and one that never resumes (tickets and cache off).
    """
    port = free_port()
    root = tmp / "nginx"
    root.mkdir()
    names = " ".join(docker_host(i) for i in range(domains))
    tls_port = free_port() if tls else None
    fresh_port = free_port() if tls else None
    tls_server = "" if tls is None or tls_port is None or fresh_port is None else (
        _nginx_tls_server(tls_port, tls, "# nginx's default session handling")
        + _nginx_tls_server(fresh_port, tls, "ssl_session_tickets off; ssl_session_cache off;"))
    temp_paths = "\n".join(
        f"  {kind}_temp_path {root}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                          "uwsgi", "scgi")
    )
    conf = f"""
worker_processes 1; daemon off; user root; pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp_paths}
  server_names_hash_max_size 4096; server_names_hash_bucket_size 64;
  server {{
    listen 127.0.0.1:{port} default_server backlog=1024;
    return 404;
  }}
  server {{
    listen 127.0.0.1:{port}; server_name {names};
    location ~ ^/v2/library/hello/manifests/[^/]+$ {{
      if ($http_user_agent ~ "^docker/") {{ return 307 https://{REGISTRY}$request_uri; }}
      return 404;
    }}
    location / {{ return 404; }}
  }}
  server {{
    listen 127.0.0.1:{port}; server_name {FILE_HOST};
    location ~ "^/download/(?<n>[^/-]+)-(?<v>[^/-]+)-(?<o>[^/-]+)-(?<a>[^/-]+)\\.tar\\.gz$" {{
      return 307 https://github.com/example/$n/releases/download/v$v/$n-$v-$o-$a.tar.gz$is_args$args;
    }}
    location / {{ return 404; }}
  }}
  server {{
    listen 127.0.0.1:{port}; server_name {PYPI_HOST};
    location = {PYPI_PATH} {{
      default_type text/html; add_header Vary Accept; root {www}; try_files /page.html =404;
    }}
    location / {{ return 404; }}
  }}{tls_server}
}}
"""
    (root / "nginx.conf").write_text(conf)
    log = root / "stdout.log"
    proc = spawn(["nginx", "-c", str(root / "nginx.conf"), "-p", str(root)], log)
    wait_until_up(port, proc, log)
    return Server("nginx", port, proc, tls_port, fresh_port)


def start_caddy(tmp: Path, domains: int, www: Path, tls: TLSFiles | None = None,
                name: str = "caddy", tickets: bool = True) -> Server:
    """Caddy with the same answers (one site block per job, a catch-all 404).

    With ``tls``, an ``https://TLS_HOST:port`` site serves that certificate (``tls`` with
    files works under ``auto_https off``). Without ``tickets`` the Caddyfile is adapted to
    JSON to disable session tickets (a setting of the whole process), so that every new
    connection is a full handshake.
    """
    port = free_port()
    root = tmp / name
    root.mkdir()
    addresses = ", ".join(f"http://{docker_host(i)}:{port}" for i in range(domains))
    template = (
        "https://github.com/example/{re.dl.1}/releases/download/v{re.dl.2}/"
        "{re.dl.1}-{re.dl.2}-{re.dl.3}-{re.dl.4}.tar.gz?{query}"
    )
    tls_port = free_port() if tls else None
    tls_site = "" if tls is None else f"""
https://{TLS_HOST}:{tls_port} {{
  bind 127.0.0.1
  tls {tls.cert} {tls.key} {{
    protocols tls1.2 tls1.3
  }}
  @manifest {{
    path_regexp ^/v2/library/hello/manifests/[^/]+$
    header User-Agent docker/*
  }}
  redir @manifest https://{REGISTRY}{{uri}} 307
  respond 404
}}"""
    conf = f"""{{
  admin off
  auto_https off
}}
{addresses} {{
  bind 127.0.0.1
  @manifest {{
    path_regexp ^/v2/library/hello/manifests/[^/]+$
    header User-Agent docker/*
  }}
  redir @manifest https://{REGISTRY}{{uri}} 307
  respond 404
}}
http://{FILE_HOST}:{port} {{
  bind 127.0.0.1
  @dl path_regexp dl ^/download/([^/-]+)-([^/-]+)-([^/-]+)-([^/-]+)\\.tar\\.gz$
  redir @dl {template} 307
  respond 404
}}
http://{PYPI_HOST}:{port} {{
  bind 127.0.0.1
  handle {PYPI_PATH} {{
    header Vary Accept
    root * {www}
    rewrite * /page.html
    file_server
  }}
  handle {{
    respond 404
  }}
}}
http://:{port} {{
  bind 127.0.0.1
  respond 404
}}{tls_site}
"""
    (root / "Caddyfile").write_text(conf)
    env = {**os.environ, "XDG_DATA_HOME": str(root / "data"),
           "XDG_CONFIG_HOME": str(root / "config")}
    log = root / "caddy.log"
    config = ["--config", str(root / "Caddyfile"), "--adapter", "caddyfile"]
    if tls and not tickets:
        adapted = json.loads(subprocess.run(
            ["caddy", "adapt", *config], capture_output=True, text=True, check=True, env=env,
            timeout=60).stdout)
        adapted.setdefault("apps", {}).setdefault("tls", {})["session_tickets"] = {
            "disabled": True}
        (root / "caddy.json").write_text(json.dumps(adapted, indent=1))
        config = ["--config", str(root / "caddy.json")]
    proc = spawn(["caddy", "run", *config], log, env=env)
    wait_until_up(port, proc, log)
    return Server(name, port, proc, tls_port)


@dataclass
class Row:
    """One benchmark row: a request, the status it must get, and who serves it."""

    name: str
    host: str
    path: str
    status: int
    servers: list[str]
    headers: dict[str, str] = field(default_factory=dict)
    etag: bool = False  # send If-None-Match with the server's own ETag of the page
    baseline: str = ""  # the row whose nginx figure the ratio uses (default: this row)
    tls: bool = False  # over HTTPS (the servers' tls_port), SNI = host
    close: bool = False  # Connection: close, so wrk opens a new connection per request
    resume: bool = True  # False: the servers' fresh_port, where no session is resumed


def make_rows(domains: int, https: bool = False) -> list[Row]:
    """The rows, in the order they are printed."""
    host = docker_host(domains // 2)
    docker_headers = {"User-Agent": DOCKER_UA}
    everyone = ["nginx", "caddy", "scarfgw"]
    docker = Row(f"docker 307 ({domains:,} domains)", host, DOCKER_PATH, 307, everyone,
                 docker_headers)
    tls_servers = ["nginx", "caddy", "scarfgw-tls"]
    tls_rows = [
        Row("https 307 keep-alive", TLS_HOST, DOCKER_PATH, 307, tls_servers, docker_headers,
            tls=True),
        Row("https handshakes, no resumption", TLS_HOST, DOCKER_PATH, 307, tls_servers,
            docker_headers, tls=True, close=True, resume=False),
        Row("https handshakes, default sessions", TLS_HOST, DOCKER_PATH, 307, tls_servers,
            docker_headers, tls=True, close=True),
    ] if https else []
    return [
        docker,
        Row("file-v1 307 + query", FILE_HOST, FILE_PATH, 307, everyone),
        Row("python page 200", PYPI_HOST, PYPI_PATH, 200, everyone),
        Row("python page 304", PYPI_HOST, PYPI_PATH, 304, everyone, etag=True),
        Row("unmatched 404", UNKNOWN_HOST, "/v2/", 404, everyone),
        Row("routing: 10 domains", docker_host(5), DOCKER_PATH, 307, ["scarfgw-10"],
            docker_headers, baseline=docker.name),
        Row("routing: 100,000 domains", docker_host(50_000), DOCKER_PATH, 307,
            ["scarfgw-100k"], docker_headers, baseline=docker.name),
        *tls_rows,
    ]


def request_headers(row: Row, server: Server) -> dict[str, str]:
    """The row's headers, plus If-None-Match with ``server``'s ETag when the row asks for it."""
    headers = dict(row.headers)
    if row.etag:
        _, got, _ = fetch(server.port, row.host, row.path)
        headers["If-None-Match"] = got["etag"]
    return headers


def row_port(row: Row, server: Server) -> int:
    """The port ``server`` answers ``row`` on."""
    if not row.tls:
        return server.port
    port = server.tls_port if row.resume else server.fresh_port
    if port is None:
        raise SystemExit(f"{server.name}: no https listener for {row.name}")
    return port


def check_tls(row: Row, server: Server, tls: TLSFiles) -> None:
    """Fail unless ``server`` presents the benchmark certificate; on a no-resumption row,
    also if a second connection resumes the first one's session (every server must do full
    handshakes there). On the other rows, say whether the server resumed it."""
    ctx = _client_context()
    port = row_port(row, server)
    with tls_connect(port, row.host, ctx) as first:
        if first.getpeercert(binary_form=True) != tls.der:
            raise SystemExit(f"{server.name}: {row.name}: not the benchmark certificate")
        first.sendall(f"GET / HTTP/1.1\r\nHost: {row.host}\r\nConnection: close\r\n\r\n"
                      .encode())
        while first.recv(65536):  # reads TLS 1.3 session tickets, if any are sent
            pass
        session = first.session
    with tls_connect(port, row.host, ctx, session) as second:
        if second.session_reused and not row.resume:
            raise SystemExit(f"{server.name}: {row.name}: TLS session resumed; disable "
                             "session tickets/cache so every connection is a full handshake")
        if row.resume and row.close:
            print(f"{server.name}: {row.name}: a second connection "
                  f"{'resumes' if second.session_reused else 'does NOT resume'} the session "
                  f"({second.version()})", flush=True)


def check(row: Row, server: Server, headers: dict[str, str], reference: dict[str, str],
          tls: TLSFiles | None = None) -> None:
    """Fail unless ``server`` answers ``row`` with its status and the reference Location."""
    if row.tls:
        assert tls is not None
        check_tls(row, server, tls)
    status, got, _ = fetch(row_port(row, server), row.host, row.path, headers, row.tls)
    if status != row.status:
        raise SystemExit(f"{server.name}: {row.name}: status {status}, expected {row.status}")
    location = got.get("location")
    expected = reference.setdefault(row.name, location or "")
    if (location or "") != expected:
        raise SystemExit(f"{server.name}: {row.name}: Location {location!r} != {expected!r}")


def lua_script(path: Path, row: Row, headers: dict[str, str]) -> Path:
    """A wrk script that sends ``row``'s request with ``headers`` (and its Host)."""
    lines = ['wrk.method = "GET"', f"wrk.path = {json.dumps(row.path)}",
             f'wrk.headers["Host"] = {json.dumps(row.host)}']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    if row.close:
        lines.append('wrk.headers["Connection"] = "close"')
    if row.tls:
        # the URL names row.host (wrk's SNI); connect to 127.0.0.1 instead of resolving it
        lines.append('function wrk.resolve(host, service) '
                     'wrk.addrs = wrk.lookup("127.0.0.1", service) end')
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Sample:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    per_cpu_s: float = 0.0  # requests per CPU second of the server's processes


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def wrk_url(row: Row, server: Server) -> str:
    """wrk's URL for ``row`` on ``server`` (HTTPS rows name the host, for SNI)."""
    if row.tls:
        return f"https://{row.host}:{row_port(row, server)}/"
    return f"http://127.0.0.1:{server.port}/"


def run_wrk(url: str, script: Path, duration: float) -> Sample:
    """wrk on core 0, one thread, CONNECTIONS connections, for ``duration`` seconds."""
    argv = ["taskset", "-c", "0", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s",
            "--timeout", "5s", "--latency", "-s", str(script), url]
    output = subprocess.run(argv, capture_output=True, text=True, check=True,
                            timeout=duration + 30).stdout
    rps, errors = wrk_rps_errors(output)
    return Sample(rps, _latency(output, "50"), _latency(output, "99"), errors)


def wrk_rps_errors(output: str) -> tuple[float, int]:
    """Requests/sec and the sum of the socket errors in wrk's ``output``."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return float(rps.group(1)) if rps else 0.0, errors


def median_sample(samples: list[Sample]) -> Sample:
    """Per-figure medians of several runs."""
    return Sample(statistics.median(s.rps for s in samples),
                  statistics.median(s.p50_ms for s in samples),
                  statistics.median(s.p99_ms for s in samples),
                  sum(s.errors for s in samples),
                  statistics.median(s.per_cpu_s for s in samples))


def print_table(rows: list[Row], results: dict[tuple[str, str], list[Sample]],
                out: Callable[[str], None]) -> None:
    """Rows x servers: req/s (median, and the runs), p50, p99, ratio to nginx, and requests
    per CPU second of the server (which load from elsewhere disturbs less than req/s)."""
    out(f"{'row':34} {'server':13} {'req/s':>9} {'runs':>24} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'x nginx':>7} {'req/CPU s':>9}")
    nginx_rps = {row.name: median_sample(results[row.name, "nginx"]).rps
                 for row in rows if (row.name, "nginx") in results}
    for row in rows:
        for server in row.servers:
            samples = results.get((row.name, server))
            if not samples:
                continue
            med = median_sample(samples)
            base = nginx_rps.get(row.baseline or row.name)
            ratio = f"{med.rps / base:.2f}" if base else "-"
            runs = "/".join(f"{s.rps / 1000:.1f}k" for s in samples)
            out(f"{row.name:34} {server:13} {med.rps:9.0f} {runs:>24} {med.p50_ms:7.2f} "
                f"{med.p99_ms:7.2f} {med.errors:6d} {ratio:>7} {med.per_cpu_s:9.0f}")


def build_kind(source: Path) -> str:
    """Whether the checkout's request path is compiled by mypyc (``make venv``) or pure."""
    count = sum(1 for _ in (source / "scarfgw").rglob("*.so"))
    return f"{count} modules compiled with mypyc" if count else "pure Python, not compiled"


def main(argv: list[str] | None = None) -> int:
    """Start the servers, check their answers, run the interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 round of 3 s runs")
    mode.add_argument("--full", action="store_true", help="3 rounds of 10 s runs (default)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--duration", type=float, help="override seconds per wrk run")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter whose venv provides twistd (e.g. a PyPy venv)")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="scarfgw checkout to run (PYTHONPATH), e.g. to compare versions")
    parser.add_argument("--domains", type=int, default=1000,
                        help="docker domains in the main config")
    parser.add_argument("--no-scale", action="store_true", help="skip the 10/100,000-domain rows")
    parser.add_argument("--https", action="store_true",
                        help="add the HTTPS rows (keep-alive, handshakes; scarfgw-tls gateway)")
    parser.add_argument("--https-only", action="store_true", help="only the HTTPS rows")
    parser.add_argument("--only", help="comma-separated servers to run (nginx,caddy,scarfgw,...)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per server")
    parser.add_argument("--json", help="also write the raw samples to this file")
    parser.add_argument("--keep-temp", action="store_true", help="keep configs and logs")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (3.0 if args.quick else 10.0)
    for tool in ("wrk", "nginx", "caddy", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (apt-get install -y wrk nginx caddy util-linux)")

    args.https = args.https or args.https_only
    rows = make_rows(args.domains, args.https)
    if args.https_only:
        rows = [row for row in rows if row.tls]
    if args.no_scale:
        rows = [row for row in rows if not row.baseline]
    wanted = set(args.only.split(",")) if args.only else None
    for row in rows:
        row.servers = [s for s in row.servers if wanted is None or s in wanted]
    rows = [row for row in rows if row.servers]
    needed = {s for row in rows for s in row.servers}

    tmp = Path(tempfile.mkdtemp(prefix="scarfgw-bench-"))
    tmp.chmod(0o755)  # nginx workers read the page
    if not args.keep_temp:
        atexit.register(shutil.rmtree, tmp, True)
    atexit.register(stop_children)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tls = make_certificate(tmp / "cert", TLS_HOST) if args.https else None
    started: dict[str, Server] = {}
    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} cores", flush=True)
    gateways = {"scarfgw": args.domains, "scarfgw-10": 10, "scarfgw-100k": 100_000,
                "scarfgw-tls": 1}
    for name, count in gateways.items():
        if name in needed:
            print(f"starting {name} ({count:,} docker domains) ...", flush=True)
            started[name] = start_gateway(tmp, name, count, args.python, args.source,
                                          tls if name == "scarfgw-tls" else None)
    if "scarfgw-tls" in needed:
        started["scarfgw-tls"].serve_fresh(start_gateway(
            tmp, "scarfgw-tls-fresh", 1, args.python, args.source, tls, tickets=False))
    www = tmp / "www"
    www.mkdir()
    page_source = started.get("scarfgw") or start_gateway(tmp, "page-source", 1, args.python,
                                                                 args.source)
    (www / "page.html").write_bytes(fetch(page_source.port, PYPI_HOST, PYPI_PATH)[2])
    if "nginx" in needed:
        started["nginx"] = start_nginx(tmp, args.domains, www, tls)
    if "caddy" in needed:
        started["caddy"] = start_caddy(tmp, args.domains, www, tls)
        if tls is not None:
            started["caddy"].serve_fresh(start_caddy(tmp, 1, www, tls, "caddy-fresh", False))

    scripts: dict[tuple[str, str], tuple[str, Path]] = {}
    reference: dict[str, str] = {}
    for row in rows:
        for name in row.servers:
            headers = request_headers(row, started[name])
            check(row, started[name], headers, reference, tls)
            index = len(scripts)
            scripts[row.name, name] = (wrk_url(row, started[name]),
                                       lua_script(tmp / f"row{index}.lua", row, headers))

    warm = {name: next(t for (_, n), t in scripts.items() if n == name) for name in needed}
    for url, script in warm.values():
        if args.warmup > 0:
            run_wrk(url, script, args.warmup)

    results: dict[tuple[str, str], list[Sample]] = {}
    for round_no in range(rounds):
        print(f"round {round_no + 1}/{rounds}, load average {os.getloadavg()}", flush=True)
        for row in rows:
            for name in row.servers:
                pids = started[name].all_pids()
                before = cpu_seconds(pids)
                sample = run_wrk(*scripts[row.name, name], duration)
                used = cpu_seconds(pids) - before
                sample.per_cpu_s = sample.rps * duration / used if used > 0 else 0.0
                results.setdefault((row.name, name), []).append(sample)
    print(f"\n{CONNECTIONS} connections, {rounds} x {duration:g} s per cell, median; python "
          f"{args.python}; source {args.source} ({build_kind(Path(args.source))}); "
          f"load average after: {os.getloadavg()}")
    print_table(rows, results, print)
    print("RSS MiB: " + ", ".join(f"{n} {s.rss_mib():.0f}" for n, s in started.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {f"{r} | {s}": [vars(x) for x in v] for (r, s), v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

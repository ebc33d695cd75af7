"""The defects of the old runtime, each reproduced with a real ``twistd scarfgw`` and
``workers: 2``: the primary is the only process reading the config file, a restarted worker
serves what the primary serves, the primary covers a missing worker's sockets, ``/readyz``
and ``/metrics`` tell the truth about every process, listeners that cannot bind and bad
endpoint strings or duplicate keys stop it with one line, orphaned spools are replayed, a
failed timeout sweep is logged and the timeouts go on, and a restarted worker serves the
certificate files as the primary read them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trustme
import yaml

from scarfgw.analytics.writer import Spool, serialise
from tests.integration.test_own_certificates import _curl_status
from tests.support import (
    child_pids,
    free_port,
    http_get,
    jsonl_events,
    loopback_listeners,
    poll_until,
    start_twistd,
    twistd_env,
    wait_ready,
    write_config,
    write_tls_pair,
)

DOCKER = {"Host": "cr.example.test", "User-Agent": "docker/27.0"}


def _rule(image: str) -> dict[str, Any]:
    return {"type": "docker-v1", "domain": "cr.example.test", "repository-name": image,
            "registry": "registry.example.test", "package-id": f"pkg-{image}"}


def _config(tmp_path: Path, *images: str) -> tuple[dict[str, Any], int, int]:
    http, admin = free_port(), free_port()
    return ({"workers": 2, "listen": loopback_listeners(http, admin),
             "rules": [_rule(image) for image in images],
             "events": jsonl_events(tmp_path, 0.1)}, http, admin)


def _statuses(http: int, image: str, count: int = 40) -> list[int]:
    """``count`` requests on fresh connections (each may land on either process)."""
    url = f"http://127.0.0.1:{http}/v2/{image}/manifests/1"
    return [http_get(url, DOCKER)[0] for _ in range(count)]


def _readyz(admin: int) -> int:
    return http_get(f"http://127.0.0.1:{admin}/readyz")[0]


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()


def _kill_worker(process: subprocess.Popen[bytes], admin: int, log: Path) -> None:
    """SIGKILL the worker; ``/readyz`` says 503 until its replacement serves again."""
    [worker] = child_pids(process)
    os.kill(worker, signal.SIGKILL)
    poll_until(lambda: _readyz(admin) == 503, "not ready while the worker is down", log)
    poll_until(lambda: len(child_pids(process) - {worker}) == 1 and _readyz(admin) == 200,
               "the worker's replacement serving", log)


def test_a_worker_restarted_after_a_refused_reload_serves_the_last_good_config(tmp_path):
    config, http, admin = _config(tmp_path, "library/one", "library/two")
    config_path = write_config(tmp_path, config)
    log = tmp_path / "twistd.log"
    process = start_twistd(config_path, log)
    try:
        wait_ready(admin, process, log)
        config_path.write_text("rules: [{type: docker-v1, domain: x}]\n")
        process.send_signal(signal.SIGHUP)
        poll_until(lambda: "config reload refused" in log.read_text(), "the refusal", log)
        [worker] = child_pids(process)
        os.kill(worker, signal.SIGKILL)
        started = time.monotonic()
        assert _statuses(http, "library/two") == [307] * 40, "no connection hangs or fails"
        assert time.monotonic() - started < 10
        poll_until(lambda: _readyz(admin) == 200, "ready again", log)
        time.sleep(2)  # a worker crash-looping on the broken file would have exited by now
        assert len(child_pids(process) - {worker}) == 1
        assert "invalid config" not in log.read_text()
        assert _statuses(http, "library/two") == [307] * 40
    finally:
        _stop(process, log)


def test_an_edit_without_sighup_is_not_served_by_a_restarted_worker(tmp_path):
    config, http, admin = _config(tmp_path, "library/one")
    config_path = write_config(tmp_path, config)
    log = tmp_path / "twistd.log"
    process = start_twistd(config_path, log)
    try:
        wait_ready(admin, process, log)
        config["rules"].append(_rule("library/two"))
        config_path.write_text(yaml.safe_dump(config))
        _kill_worker(process, admin, log)
        assert _statuses(http, "library/two") == [404] * 40, "one configuration everywhere"
        process.send_signal(signal.SIGHUP)
        poll_until(lambda: _statuses(http, "library/two", 1) == [307], "the reload", log)
        poll_until(lambda: _readyz(admin) == 200, "every process on generation 2", log)
        assert _statuses(http, "library/two") == [307] * 40
        metrics = http_get(f"http://127.0.0.1:{admin}/metrics")[2].decode()
        assert 'scarfgw_config_generation{process="primary"} 2.0' in metrics
        assert 'scarfgw_config_generation{process="worker-1"} 2.0' in metrics
        assert ('scarfgw_worker_config_results_total{result="applied",worker="worker-1"} 3.0'
                in metrics), "first start, restart, reload"
    finally:
        _stop(process, log)


def _cannot_start(config_path: Path) -> tuple[int, str]:
    process = start_twistd(config_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout.decode() + stderr.decode()


def test_a_listener_that_cannot_bind_exits_at_once_with_one_line(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        for workers in (1, 2):
            config, _, admin = _config(tmp_path, "library/one")
            config.update(workers=workers, listen=loopback_listeners(port, admin))
            started = time.monotonic()
            status, output = _cannot_start(write_config(tmp_path, config))
            assert status == 1, output
            assert time.monotonic() - started < 30
            assert "Traceback" not in output
            [line] = [line for line in output.splitlines() if "scarfgw: cannot" in line]
            assert line.endswith(f"scarfgw: cannot listen for http on "
                                 f"'tcp:{port}:interface=127.0.0.1': Address already in use")
    finally:
        taken.close()


def test_bad_endpoints_and_duplicate_keys_are_refused_by_check_config_and_twistd(tmp_path):
    config, _, admin = _config(tmp_path, "library/one")
    config["listen"]["http"] = "tcpp:0"
    bad_endpoint = write_config(tmp_path, config)
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text(f"workers: 2\nlisten: {{http: 'tcp:0'}}\nrules: []\n"
                         f"listen: {{admin: 'tcp:{admin}:interface=127.0.0.1'}}\n")
    for path, message in ((bad_endpoint, "listen.http: not a usable Twisted endpoint string "
                                         "'tcpp:0': Unknown endpoint type: 'tcpp'"),
                          (duplicate, "line 4, column 1: key 'listen' appears twice")):
        result = subprocess.run([sys.executable, "-m", "scarfgw.cli", "check-config", str(path)],
                                env=twistd_env(), capture_output=True, timeout=60, text=True)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        status, output = _cannot_start(path)
        assert status != 0 and message in output and "Traceback" not in output, output


def test_the_spools_of_workers_that_no_longer_exist_are_replayed(tmp_path):
    config, _, admin = _config(tmp_path, "library/one")
    orphan = tmp_path / "spool" / "worker-3"
    orphan.mkdir(parents=True)
    spooled = {"request_id": "from-a-former-worker-3", "domain": "cr.example.test"}
    spool = Spool(orphan, "jsonl", 1 << 20)
    spool.append([serialise(spooled)])
    log = tmp_path / "twistd.log"
    process = start_twistd(write_config(tmp_path, config), log)
    events = tmp_path / "events.jsonl"
    try:
        wait_ready(admin, process, log)
        poll_until(lambda: events.exists() and "from-a-former-worker-3" in events.read_text(),
                   "the orphaned spool replayed", log)
    finally:
        _stop(process, log)
    assert [json.loads(line) for line in events.read_text().splitlines()] == [spooled]
    assert not list(orphan.glob("*.spool")), "confirmed spool segments are removed"


FIRST_SWEEP_FAILS = '''"""Test shim before the checkout on PYTHONPATH: in every process, the first
call of the timeout sweep raises (scarfgw is unchanged; Twisted's LoopingCall is wrapped)."""

from twisted.internet import task


class FirstSweepFails(task.LoopingCall):
    def __init__(self, f, *args, **kwargs):
        if getattr(f, "__name__", "") == "close_stale":
            sweep, calls = f, []

            def f(*a, **kw):
                calls.append(None)
                if len(calls) == 1:
                    raise RuntimeError("injected fault in the first sweep")
                return sweep(*a, **kw)

        super().__init__(f, *args, **kwargs)


task.LoopingCall = FirstSweepFails
'''
SWEEP_FAILED = "timeout sweep of the http listener failed; restarting it"


def _gateway_end_owner(pids: set[int], http: int, client: socket.socket) -> int | None:
    """Which of ``pids`` holds the gateway's end of ``client``'s connection (None until one
    accepted it)."""
    client_port = client.getsockname()[1]
    inodes = {f"socket:[{fields[9]}]"
              for fields in (line.split() for line in
                             Path("/proc/net/tcp").read_text().splitlines()[1:])
              if fields[1].endswith(f":{http:04X}") and fields[2].endswith(f":{client_port:04X}")}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                pass
    return None


def _cut_after(client: socket.socket, opened: float) -> float:
    """Seconds from ``opened`` until the gateway cut ``client`` (which sent nothing): reset or
    closed without an answer; waits at most 30 s."""
    client.settimeout(30)
    with contextlib.suppress(ConnectionResetError):
        assert client.recv(1) == b"", "cut without an answer"
    return time.monotonic() - opened


def test_idle_connections_are_cut_in_every_process_after_a_failed_sweep(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(FIRST_SWEEP_FAILS)
    config, http, admin = _config(tmp_path, "library/one")
    config["limits"] = {"client_timeout": 2}
    log = tmp_path / "twistd.log"
    process = start_twistd(write_config(tmp_path, config), log, python_path=[shim])
    with contextlib.ExitStack() as clients:
        clients.callback(_stop, process, log)
        wait_ready(admin, process, log)
        poll_until(lambda: log.read_text().count(SWEEP_FAILED) == 2,
                   "the first sweep failing in both processes", log)
        pids = {process.pid, *child_pids(process)}
        opened: dict[int, tuple[socket.socket, float]] = {}
        for _ in range(60):
            if len(opened) == 2:
                break
            client = clients.enter_context(socket.create_connection(("127.0.0.1", http)))
            since = time.monotonic()
            poll_until(lambda c=client: _gateway_end_owner(pids, http, c) is not None,
                       "the accept", log)
            opened.setdefault(_gateway_end_owner(pids, http, client) or 0, (client, since))
        assert set(opened) == pids, "a connection on each process"
        cut_after = {pid: _cut_after(*connection) for pid, connection in opened.items()}
        assert all(1.5 < seconds < 10 for seconds in cut_after.values()), cut_after
        assert _statuses(http, "library/one", 4) == [307] * 4
        lines = [line for line in log.read_text().splitlines() if SWEEP_FAILED in line]
        assert len(lines) == 2 and sum("worker 1:" in line for line in lines) == 1, lines
        assert log.read_text().count("RuntimeError: injected fault in the first sweep") == 2


def test_a_restarted_worker_serves_the_certificate_files_as_the_primary_read_them(tmp_path):
    cert, key = tmp_path / "wildcard.pem", tmp_path / "wildcard.key"
    first, second = trustme.CA(), trustme.CA()
    write_tls_pair(first, cert, key, "*.example.test")
    config, _, admin = _config(tmp_path, "library/hello")
    https = free_port()
    config["listen"]["https"] = f"tcp:{https}:interface=127.0.0.1"
    config["tls"] = {"storage": str(tmp_path / "tls"), "verification": {"mode": "none"},
                     "certificates": [{"cert": str(cert), "key": str(key)}]}
    log = tmp_path / "twistd.log"
    process = start_twistd(write_config(tmp_path, config), log)
    try:
        wait_ready(admin, process, log)
        write_tls_pair(second, cert, key, "*.example.test")  # replaced without a SIGHUP
        _kill_worker(process, admin, log)
        assert [_curl_status(https, first, tmp_path) for _ in range(20)] == ["307"] * 20
    finally:
        _stop(process, log)


def _loaded(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


def test_only_the_primary_loads_duckdb_and_the_workers_stay_small(tmp_path):
    """The insights store runs in the primary: a worker never maps DuckDB (about 27 MiB a
    process), even with insights on."""
    config, http, admin = _config(tmp_path, "library/one")
    config["listen"]["insights"] = f"tcp:{free_port()}:interface=127.0.0.1"
    config["insights"] = {"duckdb": {"path": str(tmp_path / "insights.duckdb")}}
    log = tmp_path / "twistd.log"
    process = start_twistd(write_config(tmp_path, config), log)
    try:
        wait_ready(admin, process, log)
        [worker] = child_pids(process)
        assert _statuses(http, "library/one", 4) == [307] * 4
        assert _loaded(process.pid, "_duckdb.")
        assert not _loaded(worker, "_duckdb.")
        assert not _loaded(worker, "markupsafe")  # Jinja2's
    finally:
        _stop(process, log)


def _open_connections(admin: int) -> float:
    body = http_get(f"http://127.0.0.1:{admin}/metrics")[2].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("scarfgw_open_connections{"))


def _socket_count(pid: int) -> int:
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd")
               if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


def test_a_killed_workers_connections_leave_the_open_connections_gauge(tmp_path):
    config, http, admin = _config(tmp_path, "library/hello")
    log = tmp_path / "twistd.log"
    process = start_twistd(write_config(tmp_path, config), log)
    clients: list[socket.socket] = []
    try:
        wait_ready(admin, process, log)
        [worker] = child_pids(process)
        before = _socket_count(worker)
        while _socket_count(worker) == before and len(clients) < 400:  # one on the worker
            client = socket.create_connection(("127.0.0.1", http), timeout=5)
            client.sendall(b"GET /v2/library/hello/manifests/1 HTTP/1.1\r\n"
                           b"Host: cr.example.test\r\nUser-Agent: docker/27.0\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 307")
            clients.append(client)
        assert _socket_count(worker) > before, "no connection reached the worker"
        poll_until(lambda: _open_connections(admin) == len(clients),
                   "every open connection counted", log)
        _kill_worker(process, admin, log)
        for client in clients:
            client.close()
        poll_until(lambda: _open_connections(admin) == 0,
                   "the gauge back to 0 once every client left", log, timeout=10)
    finally:
        for client in clients:
            client.close()
        _stop(process, log)

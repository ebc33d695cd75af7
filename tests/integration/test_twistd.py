"""The real ``twistd scarfgw`` process: start, serve, reload on SIGHUP, refuse a bad reload,
exit 0 on SIGTERM with every event written; bad configs exit non-zero with a clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support import (
    REPO,
    child_pids,
    free_port,
    http_get,
    jsonl_events,
    loopback_listeners,
    start_twistd,
    twistd_env,
    wait_ready,
    write_config,
)


def _docker_rule(image: str) -> dict[str, Any]:
    return {"type": "docker-v1", "domain": "cr.example.test", "repository-name": image,
            "registry": "registry.example.test", "package-id": f"pkg-{image}"}


def _one_image_config(tmp_path: Path, workers: int, flush_interval: float
                      ) -> tuple[dict[str, Any], int, int]:
    """A config serving ``library/one`` on loopback ports, and its http and admin ports."""
    http, admin = free_port(), free_port()
    config: dict[str, Any] = {
        "workers": workers, "listen": loopback_listeners(http, admin),
        "rules": [_docker_rule("library/one")], "events": jsonl_events(tmp_path, flush_interval),
    }
    return config, http, admin


def test_lifecycle_reload_and_sigterm(tmp_path: Path) -> None:
    config, http, admin = _one_image_config(tmp_path, workers=1, flush_interval=30)
    config_path = write_config(tmp_path, config)
    log = tmp_path / "twistd.log"
    process = start_twistd(config_path, log)
    try:
        wait_ready(admin, process, log)
        docker = {"Host": "cr.example.test", "User-Agent": "docker/27.0"}
        status, headers, _ = http_get(f"http://127.0.0.1:{http}/v2/library/one/manifests/1", docker)
        assert status == 307
        assert headers["Location"] == "https://registry.example.test/v2/library/one/manifests/1"
        assert http_get(f"http://127.0.0.1:{http}/v2/library/two/manifests/1", docker)[0] == 404

        config["rules"].append(_docker_rule("library/two"))
        config_path.write_text(yaml.safe_dump(config))
        process.send_signal(signal.SIGHUP)
        for _ in range(100):
            if http_get(f"http://127.0.0.1:{http}/v2/library/two/manifests/1", docker)[0] == 307:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("reload did not take effect:\n" + log.read_text())

        config_path.write_text("rules: [{type: docker-v1, domain: x}]\n")
        process.send_signal(signal.SIGHUP)
        for _ in range(100):
            if "config reload refused" in log.read_text():
                break
            time.sleep(0.05)
        assert "rules[0].registry: required key is missing" in log.read_text()
        assert http_get(f"http://127.0.0.1:{http}/v2/library/two/manifests/1", docker)[0] == 307
        metrics = http_get(f"http://127.0.0.1:{admin}/metrics")[2].decode()
        assert 'scarfgw_config_reloads_total{result="failure"} 1.0' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert "reactor class: scarfgw.runtime.reactor.GatewayReactor" in log.read_text()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["image"] for e in events] == ["library/one", "library/two", "library/two"]
    assert all(e["status"] == 307 and e["pull"] for e in events)


def test_a_reactor_chosen_with_twistd_reactor_is_kept(tmp_path: Path) -> None:
    config, http, admin = _one_image_config(tmp_path, workers=1, flush_interval=30)
    log = tmp_path / "twistd.log"
    process = start_twistd(write_config(tmp_path, config), log, twistd_args=["--reactor=poll"])
    try:
        wait_ready(admin, process, log)
        docker = {"Host": "cr.example.test", "User-Agent": "docker/27.0"}
        assert http_get(f"http://127.0.0.1:{http}/v2/library/one/manifests/1", docker)[0] == 307
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert "reactor class: twisted.internet.pollreactor.PollReactor" in log.read_text()


def test_twistd_refuses_bad_config(tmp_path: Path) -> None:
    config_path = tmp_path / "bad.yaml"
    config_path.write_text(
        "listen: {http: 'tcp:0'}\nrules:\n  - {type: file-v1, domain: d, package-id: p}\n"
    )
    process = start_twistd(config_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    output = (stdout + stderr).decode()
    assert f"{config_path}: rules[0].incoming-path: required key is missing" in output
    assert "Traceback" not in output


def test_check_config_command(tmp_path: Path) -> None:
    good = REPO / "scarfgw" / "etc" / "scarfgw.yaml"
    result = subprocess.run([sys.executable, "-m", "scarfgw.cli", "check-config", str(good)],
                            env=twistd_env(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"OK" in result.stdout and b"domains: 3" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("proxy: {connect_timeout: -1}\n")
    result = subprocess.run([sys.executable, "-m", "scarfgw.cli", "check-config", str(bad)],
                            env=twistd_env(), capture_output=True, timeout=60)
    assert result.returncode == 1
    assert f"{bad}: proxy.connect_timeout: expected a positive number".encode() in result.stderr


def test_workers_share_sockets_reload_together_and_are_replaced(tmp_path: Path) -> None:
    config, http, admin = _one_image_config(tmp_path, workers=2, flush_interval=0.1)
    config_path = write_config(tmp_path, config)
    log = tmp_path / "twistd.log"
    process = start_twistd(config_path, log)
    docker = {"Host": "cr.example.test", "User-Agent": "docker/27.0"}
    url = f"http://127.0.0.1:{http}/v2/library/two/manifests/1"
    answered = 0
    try:
        wait_ready(admin, process, log)
        [worker] = child_pids(process)
        assert http_get(url, docker)[0] == 404
        answered += 1

        config["rules"].append(_docker_rule("library/two"))
        config_path.write_text(yaml.safe_dump(config))
        process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        statuses = [http_get(url, docker)[0] for _ in range(40)]
        answered += len(statuses)
        assert statuses == [307] * 40, "every process serves the reloaded config"

        time.sleep(0.5)  # past flush_interval: a SIGKILL loses only what is still in memory
        os.kill(worker, signal.SIGKILL)
        statuses = [http_get(url, docker)[0] for _ in range(40)]
        answered += len(statuses)
        assert statuses == [307] * 40, "the sockets stay open while a worker is replaced"
        for _ in range(100):
            replaced = child_pids(process) - {worker}
            if replaced:
                break
            time.sleep(0.05)
        assert replaced, "the dead worker was started again"
        metrics = http_get(f"http://127.0.0.1:{admin}/metrics")[2].decode()
        assert "scarfgw_http_requests_total" in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    assert not any(Path(f"/proc/{pid}").exists() for pid in replaced), (
        "workers exit with the primary")
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == answered - 1, "one event per answered docker request (the 404 has none)"

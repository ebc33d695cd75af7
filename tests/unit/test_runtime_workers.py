"""The worker pool and its control messages, with a fake reactor: what each worker is
handed, what the pool learns, and how readiness, covering and respawning follow."""

from __future__ import annotations

import pickle
import signal
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from scarfgw.config import read_documents
from scarfgw.runtime.control import (
    READY_LINE,
    CertificateStored,
    ConfigResult,
    ControlReceiver,
    HandConfig,
    Message,
    decode,
    frame,
    parse_result_line,
    result_line,
)
from scarfgw.runtime.workers import RESPAWN_DELAY_SECONDS, SharedSocket, WorkerPool


class FakeProcessTransport:
    """What spawnProcess returns: records stdin bytes and signals."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written = b""
        self.signals: list[int] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


class Reactor(MemoryReactorClock):
    """A clock that records spawned processes."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, Any]]] = []

    def spawnProcess(self, process_protocol: Any, executable: Any, args: Any = (),
                     env: Any = None, path: Any = None, uid: Any = None, gid: Any = None,
                     usePTY: Any = False, childFDs: Any = None) -> Any:
        transport = FakeProcessTransport(100 + len(self.spawned))
        process_protocol.makeConnection(transport)
        self.spawned.append((process_protocol, list(args), dict(childFDs)))
        return transport


def messages(transport: FakeProcessTransport) -> list[Message]:
    """Decode the frames written to a worker's stdin."""
    found: list[Message] = []
    receiver = ControlReceiver(found.append, lambda: None)
    receiver.dataReceived(transport.written)
    return found


def config_at(tmp_path: Path, generation: int) -> HandConfig:
    path = tmp_path / "c.yaml"
    path.write_text("workers: 3\nrules: []\n")
    return HandConfig(generation, read_documents(str(path)))


def make(tmp_path: Path) -> tuple[WorkerPool, Reactor, list[int], list[int]]:
    reactor = Reactor()
    covered: list[int] = []
    uncovered: list[int] = []

    def cover(index: int) -> Any:
        covered.append(index)
        return lambda: uncovered.append(index)

    sockets = {index: {"http": SharedSocket(10 + index, 2)} for index in (1, 2)}
    pool = WorkerPool(reactor, 3, lambda: sockets, cover, stop_timeout=5.0)
    pool.hand_over(config_at(tmp_path, 1))
    return pool, reactor, covered, uncovered


def report(worker: Any, *lines: str) -> None:
    worker.outReceived("".join(line + "\n" for line in lines).encode())


def test_each_worker_gets_its_sockets_and_the_current_config_at_start(tmp_path):
    pool, reactor, _, _ = make(tmp_path)
    pool.startService()
    assert len(reactor.spawned) == 2
    for index, (worker, args, fds) in enumerate(reactor.spawned, start=1):
        assert "--config" not in args, "workers never read the config file"
        assert args[args.index("--inherit") + 1] == "http=3:2" and fds[3] == 10 + index
        [handed] = messages(worker.transport)
        assert isinstance(handed, HandConfig) and handed.generation == 1


def test_ready_only_when_every_worker_serves_the_current_generation(tmp_path):
    pool, reactor, _, _ = make(tmp_path)
    pool.startService()
    first, second = (worker for worker, _, _ in reactor.spawned)
    assert not pool.in_step()
    report(first, result_line(ConfigResult(1)), READY_LINE)
    assert not pool.in_step()
    report(second, "- [x#info] a log line", result_line(ConfigResult(1)), READY_LINE)
    assert pool.in_step()
    pool.hand_over(config_at(tmp_path, 2))
    assert not pool.in_step(), "generation 2 is not served yet"
    report(first, result_line(ConfigResult(2)))
    report(second, result_line(ConfigResult(2, "cannot open GeoIP database")))
    assert not pool.in_step(), "a refusal keeps the pool out of step"
    assert [type(m) for m in messages(first.transport)] == [HandConfig, HandConfig]


def test_a_dead_worker_is_covered_restarted_with_the_current_config_and_uncovered(tmp_path):
    pool, reactor, covered, uncovered = make(tmp_path)
    pool.startService()
    first = reactor.spawned[0][0]
    pool.hand_over(config_at(tmp_path, 4))
    first.processEnded(Failure(RuntimeError("killed")))
    assert covered == [1] and not pool.in_step()
    reactor.advance(RESPAWN_DELAY_SECONDS)
    replacement = reactor.spawned[-1][0]
    assert replacement.index == 1
    [handed] = messages(replacement.transport)
    assert isinstance(handed, HandConfig) and handed.generation == 4
    report(replacement, result_line(ConfigResult(4)), READY_LINE)
    assert uncovered == [1]


def test_certificates_are_announced_and_stop_terminates_every_worker(tmp_path):
    pool, reactor, _, _ = make(tmp_path)
    pool.startService()
    pool.certificate_stored("cr.example.test")
    for worker, _, _ in reactor.spawned:
        assert messages(worker.transport)[-1] == CertificateStored("cr.example.test")
    stopped = pool.stopService()
    for worker, _, _ in reactor.spawned:
        assert worker.transport.signals == [signal.SIGTERM]
    reactor.advance(5.0)
    for worker, _, _ in reactor.spawned:
        assert worker.transport.signals == [signal.SIGTERM, signal.SIGKILL]
        worker.processEnded(Failure(RuntimeError("killed")))
    assert stopped.called and len(reactor.spawned) == 2, "nothing is restarted while stopping"


def test_result_lines_round_trip_and_other_lines_are_logs():
    assert parse_result_line(result_line(ConfigResult(3))) == ConfigResult(3)
    refused = ConfigResult(4, "c.yaml: rules[0]: bad\nsecond line")
    assert parse_result_line(result_line(refused)) == ConfigResult(4, "c.yaml: rules[0]: bad "
                                                                      "second line")
    assert parse_result_line("scarfgw-config x applied") is None
    assert parse_result_line("- [scarfgw#info] listening") is None


def test_frames_carry_messages_and_nothing_else(tmp_path):
    handed = config_at(tmp_path, 7)
    body = frame(handed)
    assert int.from_bytes(body[:4], "big") == len(body) - 4
    assert decode(body[4:]) == handed
    with pytest.raises(ValueError, match="not a control message: dict"):
        decode(pickle.dumps({"generation": 7}))

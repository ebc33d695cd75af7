"""Session-ticket keys in storage (shared, rotated, 0600) and session resumption through the
listener's contexts, with in-memory stdlib handshakes."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from zope.interface import provider

from scarfgw.tls.certs import self_signed
from scarfgw.tls.sni import SNIServerOptions
from scarfgw.tls.tickets import KEY_BYTES, RECHECK_SECONDS, ROTATION_SECONDS, TicketKeys

START = 1_800_000_000.0


def _clock(at: float = START) -> Clock:
    clock = Clock()
    clock.advance(at)
    return clock


def _client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = version
    return ctx


def connect(options: SNIServerOptions, client_ctx: ssl.SSLContext,
            session: ssl.SSLSession | None = None) -> ssl.SSLObject:
    """A handshake in memory, plus the exchange that carries TLS 1.3 tickets; the client."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(to_client, to_server, server_hostname="a.test",
                                 session=session)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = options.connection(incoming, outgoing, ())
    for _ in range(4):
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        incoming.write(to_server.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        to_client.write(outgoing.read())
    server.write(b"hello")
    to_client.write(outgoing.read())
    assert client.read(5) == b"hello"
    return client


@pytest.fixture
def served() -> SNIServerOptions:
    return _options(None)


def _options(tickets: TicketKeys | None) -> SNIServerOptions:
    options = SNIServerOptions(self_signed("fallback.invalid", 0, 10**10), tickets=tickets)
    options.install("a.test", self_signed("a.test", 0, 10**10))
    return options


def test_the_current_key_is_created_once_0600_and_shared_by_every_process(tmp_path):
    folder = tmp_path / "tickets"
    first, second = TicketKeys(folder, _clock()), TicketKeys(folder, _clock())
    assert first()[0].name == second()[0].name
    files = list(folder.iterdir())
    assert len(files) == 1 and files[0].stat().st_mode & 0o777 == 0o600
    assert len(files[0].read_bytes()) == KEY_BYTES
    assert folder.stat().st_mode & 0o777 == 0o700


def test_keys_rotate_keeping_the_previous_one_for_decryption(tmp_path):
    clock = _clock()
    keys = TicketKeys(tmp_path, clock)
    old, _ = keys()
    clock.advance(ROTATION_SECONDS)
    new, known = keys()
    assert new.name != old.name and set(known) == {new.name, old.name}
    clock.advance(ROTATION_SECONDS)
    newest, known = keys()
    assert set(known) == {newest.name, new.name}
    assert len(list(tmp_path.glob("*.key"))) == 2, "keys older than the previous are removed"


def test_a_key_made_early_by_an_instance_whose_clock_runs_ahead_is_accepted(tmp_path):
    ahead = TicketKeys(tmp_path, _clock(START + ROTATION_SECONDS))
    behind = TicketKeys(tmp_path, _clock())
    early, _ = ahead()
    current, known = behind()
    assert current.name != early.name and early.name in known


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_session_resumes_on_another_process_sharing_the_storage(tmp_path, version):
    clock = _clock()
    one = _options(TicketKeys(tmp_path, clock))
    two = _options(TicketKeys(tmp_path, clock))
    assert one.resumes and two.resumes
    client = _client_context(version)
    first = connect(one, client)
    assert not first.session_reused and first.session is not None
    second = connect(two, client, first.session)
    assert second.session_reused and second.version() == first.version()
    clock.advance(ROTATION_SECONDS)
    assert connect(one, client, first.session).session_reused, "previous key still accepted"
    clock.advance(ROTATION_SECONDS)
    assert not connect(one, client, first.session).session_reused, "too old: full handshake"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_without_tickets_no_session_resumes(served, version):
    assert not served.resumes
    client = _client_context(version)
    first = connect(served, client)
    assert not connect(served, client, first.session).session_reused


def test_another_storage_means_a_full_handshake(tmp_path):
    client = _client_context(ssl.TLSVersion.TLSv1_3)
    first = connect(_options(TicketKeys(tmp_path / "a", _clock())), client)
    other = _options(TicketKeys(tmp_path / "b", _clock()))
    assert not connect(other, client, first.session).session_reused


def test_unusable_storage_falls_back_to_a_process_key_and_says_so_once(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    clock = _clock()
    keys = TicketKeys(Path(blocked) / "tickets", clock)
    errors: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.error:
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        options = _options(keys)
        client = _client_context(ssl.TLSVersion.TLSv1_3)
        first = connect(options, client)
        clock.advance(RECHECK_SECONDS + 1)
        assert connect(options, client, first.session).session_reused
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(errors) == 1 and "tickets are per process" in str(errors[0]["log_format"])


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_failing_key_source_means_full_handshakes_and_one_logged_failure(tmp_path, version):
    keys = TicketKeys(tmp_path, _clock())
    broken = {"now": False}

    def source() -> Any:
        if broken["now"]:
            raise OSError("key source broken")
        return keys()

    failures: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        options = _options(source)  # type: ignore[arg-type]
        client = _client_context(version)
        first = connect(options, client)
        broken["now"] = True
        second = connect(options, client, first.session)  # the handshake still completes
        third = connect(options, client, first.session)
        assert len(failures) == 1 and "key source broken" in str(failures[0]["log_failure"].value)
        broken["now"] = False
        assert connect(options, client, first.session).session_reused, "working again"
        broken["now"] = True
        connect(options, client, first.session)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not second.session_reused and not third.session_reused
    assert len(failures) == 2, "a failure after the tickets worked again is logged too"

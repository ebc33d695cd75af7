"""What a Python server can reach on the row "https handshakes, default sessions".

Beside nginx, Caddy and the gateway, this runs minimal servers written in Python that do
nothing but the TLS work: an epoll loop that accepts, completes the handshake (the session
resumed from its ticket), reads one request and answers it with the docker 307 and
``close_notify``. No Twisted, HTTP parsing, routing, events or metrics: what they reach
bounds any server built on the same TLS engine and settings. The floors:

- ``floor-gateway-tls``: the gateway's own TLS layer (``scarfgw.tls.sni.SNIServerOptions``:
  its context settings, the SNI switch from the fallback certificate, ticket keys shared
  through a ``tls.storage`` folder) on memory BIOs, as the gateway runs it. The gap between
  it and ``scarfgw-tls`` is what the rest of the gateway costs per connection.
- ``floor-twisted-tls``: the same TLS layer in Twisted, as the gateway runs it (its
  reactor, listening port and TLS transport), under a protocol that answers as soon as the
  request's head has arrived: no HTTP channel, routing, events or metrics.
- ``floor-ssl-defaults``: the stdlib ``ssl.SSLObject`` on memory BIOs with OpenSSL's default
  settings (a server-side session cache, OpenSSL's own ticket keys, AES-256 first).
- ``floor-ssl-socket``: the same on a non-blocking ``ssl.SSLSocket`` (OpenSSL reads and
  writes the socket itself).
- ``floor-pyopenssl``: pyOpenSSL on its own socket, on the OpenSSL that cryptography links
  statically (a newer release than the system's). It cannot share ticket keys between
  processes: cryptography exposes no call that sets them.

Usage: ``python bench/tls_floor.py [--rounds 3] [--duration 5]`` (run.py's helpers: same
certificate, wrk on core 0, every server on core 1, requests per CPU second).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import selectors
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # the benchmark's own helpers, next to this script

FLOORS = ("floor-gateway-tls", "floor-twisted-tls", "floor-ssl-defaults", "floor-ssl-socket",
          "floor-pyopenssl")
ANSWER = (f"HTTP/1.1 307 Temporary Redirect\r\nLocation: https://{run.REGISTRY}{run.DOCKER_PATH}"
          "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").encode()
END_OF_HEAD = b"\r\n\r\n"
READ_BYTES = 16 * 1024


class _Engine:
    """One connection's TLS, as the loop drives it: ``step`` advances the handshake and
    answers the request once its head has arrived; True when the connection is done. The
    subclasses set ``tls`` (anything with ``do_handshake`` and ``read``) and the exception
    it raises for more bytes."""

    want_read: type[Exception] = ssl.SSLWantReadError
    tls: Any

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.handshaken = False
        self.head = b""

    def step(self) -> bool:
        try:
            self.receive()
            if not self.handshaken:
                self.tls.do_handshake()
                self.handshaken = True
            while END_OF_HEAD not in self.head:
                data = self.tls.read(READ_BYTES)
                if not data:
                    return True
                self.head += data
        except self.want_read:
            self.flush()
            return False
        self.answer()
        return True

    def receive(self) -> None:
        """Take what the client sent (only memory BIOs need it handed over)."""

    def answer(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Send what the engine wrote (only memory BIOs hold any)."""


class _SSLBio(_Engine):
    def __init__(self, sock: socket.socket,
                 wrap: Callable[[ssl.MemoryBIO, ssl.MemoryBIO], ssl.SSLObject]) -> None:
        super().__init__(sock)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = wrap(self.incoming, self.outgoing)

    def receive(self) -> None:
        data = self.sock.recv(READ_BYTES)
        if not data:
            raise ConnectionResetError
        self.incoming.write(data)

    def answer(self) -> None:
        self.tls.write(ANSWER)
        with contextlib.suppress(ssl.SSLError):  # the client's close_notify is not awaited
            self.tls.unwrap()
        self.flush()

    def flush(self) -> None:
        if self.outgoing.pending:
            self.sock.send(self.outgoing.read())


class _SSLSocket(_Engine):
    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        self.tls = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        super().__init__(self.tls)  # the wrapped socket takes the file descriptor over

    def answer(self) -> None:
        self.tls.send(ANSWER)
        with contextlib.suppress(ssl.SSLError, OSError):
            self.tls.unwrap()


class _PyOpenSSL(_Engine):
    def __init__(self, sock: socket.socket, ctx: Any) -> None:
        from OpenSSL import SSL

        super().__init__(sock)
        self.want_read = SSL.WantReadError
        self.tls = SSL.Connection(ctx, sock)
        self.tls.set_accept_state()

    def answer(self) -> None:
        self.tls.send(ANSWER)
        self.tls.shutdown()


def _gateway_options(cert: str, key: str) -> Any:
    """The gateway's TLS layer serving ``cert`` for TLS_HOST, with shared ticket keys."""
    from scarfgw.tls.certs import load_keyed_chain, self_signed
    from scarfgw.tls.sni import SNIServerOptions
    from scarfgw.tls.tickets import TicketKeys

    keyed = load_keyed_chain(Path(key).read_bytes(), Path(cert).read_bytes())
    storage = Path(tempfile.mkdtemp(prefix="scarfgw-floor-tickets-"))
    atexit.register(shutil.rmtree, storage, True)
    options = SNIServerOptions(self_signed("fallback.invalid", time.time() - 60, 86400),
                               tickets=TicketKeys(storage, _WallClock()))
    options.install(run.TLS_HOST, keyed)
    return options


def _gateway_tls(cert: str, key: str) -> Callable[[socket.socket], _Engine]:
    """Connections on the gateway's TLS layer, in this script's loop."""
    options = _gateway_options(cert, key)
    return lambda sock: _SSLBio(sock, lambda incoming, outgoing: options.connection(
        incoming, outgoing, ()))


def serve_twisted(cert: str, key: str, port: int) -> None:
    """The gateway's TLS layer, port and reactor, under a protocol that only answers."""
    from scarfgw.runtime.reactor import install_unless_chosen

    install_unless_chosen()
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from scarfgw.http.connection import GatewayPort
    from scarfgw.tls.transport import TLSServerFactory

    class Answer(Protocol):
        head = b""

        def dataReceived(self, data: bytes) -> None:
            self.head += data
            if END_OF_HEAD in self.head:
                self.transport.write(ANSWER)  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

    inner = Factory.forProtocol(Answer)
    inner.noisy = False
    GatewayPort(port, TLSServerFactory(_gateway_options(cert, key), inner), 1024, "127.0.0.1",
                reactor).startListening()
    reactor.run()


class _WallClock:
    """The ``seconds()`` clock TicketKeys reads."""

    @staticmethod
    def seconds() -> float:
        return time.time()


def _engine(name: str, cert: str, key: str) -> Callable[[socket.socket], _Engine]:
    """A connection factory for the floor server ``name``."""
    if name == "floor-gateway-tls":
        return _gateway_tls(cert, key)
    if name == "floor-pyopenssl":
        from OpenSSL import SSL

        pyctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        pyctx.use_certificate_chain_file(cert)
        pyctx.use_privatekey_file(key)
        return lambda sock: _PyOpenSSL(sock, pyctx)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if name == "floor-ssl-defaults":
        return lambda sock: _SSLBio(sock, lambda incoming, outgoing: ctx.wrap_bio(
            incoming, outgoing, server_side=True))
    return lambda sock: _SSLSocket(sock, ctx)


def serve(name: str, cert: str, key: str, port: int) -> None:
    """The floor server ``name`` on 127.0.0.1:``port``, until killed."""
    if name == "floor-twisted-tls":
        serve_twisted(cert, key, port)
        return
    connect = _engine(name, cert, key)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    while True:
        for selected, _ in selector.select():
            if selected.fileobj is listener:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    engine = connect(sock)
                    selector.register(engine.sock, selectors.EVENT_READ, engine)
                continue
            engine = selected.data
            try:
                done = engine.step()
            except Exception:  # a failed connection: close it, as the others do
                done = True
            if done:
                selector.unregister(engine.sock)
                engine.sock.close()


_UNVERIFIED = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE


def start_floor(tmp: Path, name: str, tls: run.TLSFiles, python: str, source: Path
                ) -> run.Server:
    """This script in ``--serve`` mode on core 1, once it accepts TLS connections."""
    port = run.free_port()
    log = tmp / f"{name}.log"
    proc = run.spawn([python, __file__, "--serve", name, str(tls.cert), str(tls.key),
                      str(port)], log, env={**os.environ, "PYTHONPATH": str(source)})
    deadline = time.monotonic() + run.START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited; see {log}:\n{log.read_text()}")
        try:
            run.tls_connect(port, run.TLS_HOST, _UNVERIFIED).close()
            return run.Server(name, port, proc, port)
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{name} did not come up; see {log}")


def main() -> int:
    """Start the servers, check their answers, run interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter whose venv provides twistd")
    parser.add_argument("--source", type=Path, default=run.REPO, help="scarfgw checkout to run")
    parser.add_argument("--serve", nargs=4, metavar=("ENGINE", "CERT", "KEY", "PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        name, cert, key, port = args.serve
        serve(name, cert, key, int(port))
        return 0
    for tool in ("wrk", "nginx", "caddy", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (apt-get install -y wrk nginx caddy util-linux)")
    tmp = Path(tempfile.mkdtemp(prefix="scarfgw-floor-"))
    tmp.chmod(0o755)
    atexit.register(shutil.rmtree, tmp, True)
    atexit.register(run.stop_children)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tls = run.make_certificate(tmp / "cert", run.TLS_HOST)
    www = tmp / "www"
    www.mkdir()
    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} cores", flush=True)
    started = {"nginx": run.start_nginx(tmp, 1, www, tls),
               "caddy": run.start_caddy(tmp, 1, www, tls),
               "scarfgw-tls": run.start_gateway(tmp, "scarfgw-tls", 1, args.python,
                                                args.source, tls)}
    started.update((name, start_floor(tmp, name, tls, args.python, args.source))
                   for name in FLOORS)
    headers = {"User-Agent": run.DOCKER_UA}
    row = run.Row("https handshakes, default sessions", run.TLS_HOST, run.DOCKER_PATH, 307,
                  list(started), headers, tls=True, close=True)
    reference: dict[str, str] = {}
    scripts = {}
    for name, server in started.items():
        run.check(row, server, headers, reference, tls)
        scripts[name] = (run.wrk_url(row, server), run.lua_script(tmp / f"{name}.lua", row,
                                                                  headers))
        run.run_wrk(*scripts[name], 2)
    results: dict[tuple[str, str], list[run.Sample]] = {}
    for round_no in range(args.rounds):
        print(f"round {round_no + 1}/{args.rounds}, load average {os.getloadavg()}", flush=True)
        for name, server in started.items():
            pids = server.all_pids()
            before = run.cpu_seconds(pids)
            sample = run.run_wrk(*scripts[name], args.duration)
            used = run.cpu_seconds(pids) - before
            sample.per_cpu_s = sample.rps * args.duration / used if used > 0 else 0.0
            results.setdefault((row.name, name), []).append(sample)
    print(f"\n{run.CONNECTIONS} connections, {args.rounds} x {args.duration:g} s per cell, "
          f"median; {ssl.OPENSSL_VERSION} (ssl module); load average after: {os.getloadavg()}")
    run.print_table([row], results, print)
    nginx = run.median_sample(results[row.name, "nginx"]).per_cpu_s
    print("req per CPU s x nginx: " + ", ".join(
        f"{name} {run.median_sample(results[row.name, name]).per_cpu_s / nginx:.2f}"
        for name in started))
    return 0


if __name__ == "__main__":
    sys.exit(main())

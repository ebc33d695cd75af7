"""The few OpenSSL calls the stdlib ``ssl`` module lacks, made with ctypes on the very
libssl it links: session-ticket keys by callback, the server session cache switch and the
TLS 1.3 cipher suites.

The functions are looked up in the libssl and libcrypto already mapped into the process by
``_ssl`` (read from ``/proc/self/maps``), never in another build, so every call works on
the same OpenSSL that owns the ``SSL_CTX``. :func:`context_pointer` finds an
``ssl.SSLContext``'s ``SSL_CTX *`` (the first field after the object header) and checks
it against the context's options before anything is called on it.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from collections.abc import Callable
from typing import Any, Final

from twisted.logger import Logger

log = Logger()

KEY_NAME_BYTES: Final = 16
CIPHER_KEY_BYTES: Final = 32
MAC_KEY_BYTES: Final = 32
_SSL_CTRL_SET_SESS_CACHE_MODE: Final = 44
_SSL_SESS_CACHE_OFF: Final = 0
_OSSL_PARAM_UTF8_STRING: Final = 4
_OSSL_PARAM_OCTET_STRING: Final = 5
_OSSL_PARAM_UNMODIFIED: Final = ctypes.c_size_t(-1).value
_SHA256: Final = b"SHA256"


class NativeError(Exception):
    """The process's OpenSSL cannot be reached as expected (tickets stay off)."""


class _Param(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("data_type", ctypes.c_uint),
                ("data", ctypes.c_void_p), ("data_size", ctypes.c_size_t),
                ("return_size", ctypes.c_size_t)]


_KeyName = ctypes.c_char * KEY_NAME_BYTES
_TicketCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_int)


def _mapped(name: str) -> str:
    """The path of the shared library ``name`` (``libssl.so.3``...) mapped into this
    process."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.rstrip("\n").split(None, 5)[-1]
            if "/" in path and path.rsplit("/", 1)[-1].startswith(name):
                return path
    raise NativeError(f"{name} is not loaded by the ssl module (statically linked Python?)")


class _Library:
    """The libssl/libcrypto functions used here, with their C signatures."""

    def __init__(self) -> None:
        if sys.implementation.name != "cpython" or ssl.OPENSSL_VERSION_INFO < (3,):
            raise NativeError(f"needs CPython with OpenSSL 3, not {sys.implementation.name} "
                              f"with {ssl.OPENSSL_VERSION}")
        major = ssl.OPENSSL_VERSION_INFO[0]
        libssl = ctypes.CDLL(_mapped(f"libssl.so.{major}"))
        libcrypto = ctypes.CDLL(_mapped(f"libcrypto.so.{major}"))
        self.ctx_get_options = libssl.SSL_CTX_get_options
        self.ctx_get_options.restype = ctypes.c_uint64
        self.ctx_get_options.argtypes = [ctypes.c_void_p]
        self.ctx_ctrl = libssl.SSL_CTX_ctrl
        self.ctx_ctrl.restype = ctypes.c_long
        self.ctx_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.set_ciphersuites = libssl.SSL_CTX_set_ciphersuites
        self.set_ciphersuites.restype = ctypes.c_int
        self.set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.set_ticket_cb = libssl.SSL_CTX_set_tlsext_ticket_key_evp_cb
        self.set_ticket_cb.restype = ctypes.c_int
        self.set_ticket_cb.argtypes = [ctypes.c_void_p, _TicketCallback]
        fetch = libcrypto.EVP_CIPHER_fetch
        fetch.restype = ctypes.c_void_p
        fetch.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        self.aes_256_cbc: int = fetch(None, b"AES-256-CBC", None)
        """Fetched once: ``EVP_aes_256_cbc()`` would be looked up again on every ticket."""
        if not self.aes_256_cbc:
            raise NativeError("AES-256-CBC is not available")
        self.cipher_init = libcrypto.EVP_CipherInit_ex
        self.cipher_init.restype = ctypes.c_int
        self.cipher_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        self.mac_set_params = libcrypto.EVP_MAC_CTX_set_params
        self.mac_set_params.restype = ctypes.c_int
        self.mac_set_params.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.rand_bytes = libcrypto.RAND_bytes
        self.rand_bytes.restype = ctypes.c_int
        self.rand_bytes.argtypes = [ctypes.c_void_p, ctypes.c_int]


_library: _Library | None = None


def _lib() -> _Library:
    global _library
    if _library is None:
        try:
            _library = _Library()
        except (OSError, AttributeError) as exc:
            raise NativeError(f"cannot use the ssl module's OpenSSL: {exc}") from exc
    return _library


def context_pointer(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of ``ctx``, checked: its options must be the context's."""
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer or _lib().ctx_get_options(pointer) != int(ctx.options):
        raise NativeError("unexpected ssl.SSLContext layout")
    return pointer


def disable_session_cache(ctx: ssl.SSLContext) -> None:
    """No server-side session cache: a session is resumed from its ticket or not at all."""
    _lib().ctx_ctrl(context_pointer(ctx), _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF,
                    None)


def set_tls13_ciphersuites(ctx: ssl.SSLContext, suites: str) -> None:
    """Offer the TLS 1.3 cipher suites ``suites`` (colon-separated, in preference order); the
    ``ssl`` module only sets TLS 1.2 ciphers."""
    if _lib().set_ciphersuites(context_pointer(ctx), suites.encode("ascii")) != 1:
        raise NativeError(f"OpenSSL refused the TLS 1.3 cipher suites {suites}")


class TicketKey:
    """One session-ticket key: a 16-byte name, an AES-256-CBC key and an HMAC-SHA256 key."""

    def __init__(self, name: bytes, cipher_key: bytes, mac_key: bytes) -> None:
        assert len(name) == KEY_NAME_BYTES and len(cipher_key) == CIPHER_KEY_BYTES
        assert len(mac_key) == MAC_KEY_BYTES
        self.name = name
        self.cipher_key = cipher_key
        self._mac_key = ctypes.create_string_buffer(mac_key, MAC_KEY_BYTES)
        self._digest = ctypes.create_string_buffer(_SHA256)
        self._params = (_Param * 3)(
            _Param(b"digest", _OSSL_PARAM_UTF8_STRING, ctypes.cast(self._digest, ctypes.c_void_p),
                   len(_SHA256), _OSSL_PARAM_UNMODIFIED),
            _Param(b"key", _OSSL_PARAM_OCTET_STRING, ctypes.cast(self._mac_key, ctypes.c_void_p),
                   MAC_KEY_BYTES, _OSSL_PARAM_UNMODIFIED),
            _Param(None, 0, None, 0, 0),
        )
        self.mac_params = ctypes.addressof(self._params)
        """The ``OSSL_PARAM`` array that sets the HMAC's digest and key."""

    def __repr__(self) -> str:
        return f"TicketKey(name={self.name.hex()})"


KeySource = Callable[[], tuple[TicketKey, dict[bytes, TicketKey]]]
"""Returns the key to encrypt new tickets with and every key tickets may be decrypted with."""


def set_ticket_keys(ctx: ssl.SSLContext, keys: KeySource) -> Any:
    """Encrypt and decrypt ``ctx``'s session tickets with the keys ``keys`` gives.

    A ticket under any known key is accepted and answered with a fresh ticket under the
    current key (2: renew; TLS 1.3 clients such as curl and browsers use each ticket once,
    and with 1 OpenSSL issues none after a resumption; nginx's built-in keys renew too); a
    ticket under an unknown key means a full handshake. Returns the C callback, which must
    be kept alive as long as ``ctx``. Should ``keys`` or OpenSSL fail, the handshake goes on
    without resumption (no ticket issued, a presented one ignored); the first failure is
    logged, and again the first after they worked again.

    OpenSSL calls it twice per resumed TLS 1.3 handshake, so it makes three foreign calls
    at most and reads and writes the key name in place.
    """
    lib = _lib()
    pointer = context_pointer(ctx)
    rand_bytes, cipher_init, mac_set_params = lib.rand_bytes, lib.cipher_init, lib.mac_set_params
    aes_256_cbc = lib.aes_256_cbc
    name_at = _KeyName.from_address
    failed = False

    def callback(_ssl_ptr: int, name: int, iv: int, cipher_ctx: int, mac_ctx: int,
                 encrypt: int) -> int:
        nonlocal failed
        try:
            current, known = keys()
            if encrypt:
                if rand_bytes(iv, 16) != 1:
                    raise NativeError("RAND_bytes failed")
                name_at(name).raw = current.name
                key = current
            else:
                found = known.get(name_at(name).raw)
                if found is None:
                    return 0
                key = found
            if (cipher_init(cipher_ctx, aes_256_cbc, None, key.cipher_key, iv, encrypt) != 1
                    or mac_set_params(mac_ctx, key.mac_params) != 1):
                raise NativeError("OpenSSL refused the session-ticket key")
        except Exception:
            if not failed:
                failed = True
                log.failure("TLS session tickets failed; handshakes go on without resumption"
                            " (logged once until they work again)")
            return 0
        failed = False
        return 1 if encrypt else 2

    c_callback = _TicketCallback(callback)
    if lib.set_ticket_cb(pointer, c_callback) != 1:
        raise NativeError("SSL_CTX_set_tlsext_ticket_key_evp_cb failed")
    return c_callback

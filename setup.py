"""Build scarfgw: the modules on the request path are compiled to C with mypyc.

They are the routing core, the HTTP channel, the gateway, the event record and writer, the
metrics counters and the https listener's TLS layer (``COMPILED``). ``SCARFGW_PURE=1`` builds
without compiling; the same modules then run as plain Python, with the same behaviour, at
about half the throughput. Without a C compiler or the Python headers, or when mypyc or the C
compiler fails, the build prints one warning and installs plain Python as well: it never
fails for that reason.
"""

import os
import shutil
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError

COMPILED = [
    "scarfgw/rules/",
    "scarfgw/http/channel.py",
    "scarfgw/gateway/gateway.py",
    "scarfgw/gateway/clientinfo.py",
    "scarfgw/ops/accesslog.py",
    "scarfgw/ops/formats.py",
    "scarfgw/analytics/event.py",
    "scarfgw/analytics/useragent.py",
    "scarfgw/analytics/writer.py",
    "scarfgw/ops/metrics.py",
    "scarfgw/tls/hello.py",
    "scarfgw/tls/transport.py",
]

# Commands that build extensions; metadata and sdist builds never need mypyc.
BUILDING = {"build", "build_ext", "bdist_wheel", "install", "develop", "editable_wheel"}


def warn_pure(reason: str) -> None:
    """The one warning of a build that falls back to plain Python."""
    print(f"warning: scarfgw is installed as plain Python, not compiled with mypyc: {reason}. "
          "It works the same at about half the throughput; install gcc and the Python "
          "headers (Debian: gcc python3-dev) and reinstall to compile it.",
          file=sys.stderr, flush=True)


def missing_toolchain() -> str | None:
    """Why C extensions cannot be built here, or None when a compiler and headers exist."""
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.exists(headers):
        return f"{headers} is missing"
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    return None


def compiled_extensions() -> list:
    """mypyc's extensions, or none (with the warning) when they cannot be built."""
    if os.environ.get("SCARFGW_PURE") or not BUILDING.intersection(sys.argv[1:]):
        return []
    reason = missing_toolchain()
    if reason is None:
        try:
            from mypyc.build import mypycify

            return mypycify(COMPILED, opt_level="3")
        except (Exception, SystemExit) as exc:
            reason = f"mypyc failed ({type(exc).__name__}: {exc})"
    warn_pure(reason)
    return []


class BuildExtOrPure(build_ext):
    """build_ext that removes what it built and keeps the plain Python when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, BaseError, OSError) as exc:
            for output in self.get_outputs():
                if os.path.exists(output):
                    os.remove(output)
            warn_pure(f"the C compiler failed ({exc})")


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": BuildExtOrPure})

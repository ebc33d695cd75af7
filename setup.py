"""Build scarfgw: the modules on the request path are compiled to C with mypyc.

They are the routing core, the HTTP channel, the gateway, the event record and writer, the
metrics counters and the https listener's TLS layer (``COMPILED``). ``SCARFGW_PURE=1`` builds
without compiling; the same modules then run as plain Python, with the same behaviour, at
about half the throughput.
"""

import os

from setuptools import setup

COMPILED = [
    "scarfgw/rules/",
    "scarfgw/http/channel.py",
    "scarfgw/gateway/gateway.py",
    "scarfgw/gateway/clientinfo.py",
    "scarfgw/ops/accesslog.py",
    "scarfgw/analytics/event.py",
    "scarfgw/analytics/useragent.py",
    "scarfgw/analytics/writer.py",
    "scarfgw/ops/metrics.py",
    "scarfgw/tls/hello.py",
    "scarfgw/tls/transport.py",
]

if os.environ.get("SCARFGW_PURE"):
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3"))

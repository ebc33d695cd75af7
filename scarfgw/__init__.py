"""scarfgw: a download gateway (docker, pip, files) with ACME TLS and batched analytics."""

__version__ = "0.1.0"

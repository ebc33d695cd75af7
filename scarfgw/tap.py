"""``twistd scarfgw``: command-line options and the service factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.python import usage

from scarfgw.config import Config, ConfigError, load_config
from scarfgw.ops.sharedmetrics import share_metrics
from scarfgw.runtime.reactor import install_unless_chosen

if TYPE_CHECKING:
    from scarfgw.runtime.service import GatewayProcess


NO_CONFIG = ("no config file: run `twistd scarfgw --config FILE` "
             "(`scarfgw example-config > scarfgw.yaml` writes an example to start from)")


class Options(usage.Options):
    """Options of ``twistd scarfgw``."""

    synopsis = "--config FILE"
    longdesc = (
        "Run the scarfgw download gateway. The config file is YAML (a scarf-gateway manifest "
        "JSON also loads). SIGHUP reloads it; SIGUSR1 reopens the JSONL event sink."
    )
    optParameters = [
        ["config", "c", None,
         "Config file (YAML, or a scarf-gateway manifest JSON); required. "
         "`scarfgw example-config > scarfgw.yaml` writes a starting one."],
    ]

    def postOptions(self) -> None:
        """Load and validate the config now, so a bad file stops twistd with a clear line;
        install the gateway's reactor unless ``--reactor`` chose one."""
        if not self["config"]:
            raise usage.UsageError(NO_CONFIG)
        install_unless_chosen()
        try:
            self.loaded: Config = load_config(self["config"])
        except ConfigError as exc:
            raise usage.UsageError(f"invalid config: {exc}") from None
        if self.loaded.workers > 1:
            share_metrics()


def makeService(options: Options, reactor: Any = None) -> GatewayProcess:
    """The gateway service for ``options`` (the reactor defaults to the global one).

    The service module (and with it prometheus-client) is imported only now: with several
    workers the metrics must live in a directory shared by the processes, which
    prometheus-client reads from the environment when it is first imported. The C
    allocator is tuned for the proxy's buffers here too (:mod:`scarfgw.runtime.allocator`).
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    from scarfgw.runtime.allocator import tune_allocator
    from scarfgw.runtime.service import primary_service

    tune_allocator()
    return primary_service(options.loaded, reactor, options["config"])

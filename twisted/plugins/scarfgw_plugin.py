"""twistd plugin: ``twistd scarfgw --config FILE`` (kept tiny; imports nothing heavy)."""

from twisted.application.service import ServiceMaker

scarfgw = ServiceMaker(
    "scarfgw",
    "scarfgw.tap",
    "Download gateway: redirects/proxies docker, pip and file downloads, with analytics",
    "scarfgw",
)

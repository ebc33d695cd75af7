"""insights.domain: which listener the public listeners hand the domain to, and which domains
get certificates."""

from __future__ import annotations

import pytest

from scarfgw.config import ConfigError, parse_config
from scarfgw.http.endpoints import listener_url
from scarfgw.runtime.snapshot import certificate_domains, public_site

RULE = {"type": "file-v1", "domain": "get.test", "incoming-path": "/{+path}",
        "package-id": "p", "outgoing-url": "https://files.example.org/{+path}"}


@pytest.mark.parametrize(("endpoint", "url"), [
    ("tcp:9190:interface=127.0.0.1", "http://127.0.0.1:9190"),
    ("tcp:9190", "http://127.0.0.1:9190"),
    ("tcp:9190:interface=0.0.0.0", "http://127.0.0.1:9190"),
    ("tcp:9190:interface=\\:\\:1", "http://[::1]:9190"),
    ("tcp:interface=127.0.0.2:port=9190", "http://127.0.0.2:9190"),
    ("tcp:9190:backlog=50", "http://127.0.0.1:9190"),
    ("tcp6:9190", "http://127.0.0.1:9190"),
    ("tcp6:9190:interface=\\:\\:1", "http://[::1]:9190"),
    ("tcp6:port=9190:interface=\\:\\:", "http://127.0.0.1:9190"),
    ("tcp6:0:interface=\\:\\:1", None),
    ("tcp:0:interface=127.0.0.1", None),
    ("unix:/run/insights.sock", None),
    ("tcp:x", None),
])
def test_listener_url(endpoint, url):
    assert listener_url(endpoint) == url


def test_the_insights_domain_is_proxied_and_gets_a_certificate():
    config = parse_config({"rules": [RULE], "insights": {"domain": "Stats.Test"},
                           "listen": {"insights": "tcp:9190:interface=127.0.0.1"}}, "x.yaml")
    site = public_site(config)
    assert site is not None and site.domain == "stats.test"
    assert (site.decision.base_url, site.decision.site) == ("http://127.0.0.1:9190", True)
    assert certificate_domains(config) == {"get.test", "stats.test"}


def test_without_a_domain_nothing_changes():
    config = parse_config({"rules": [RULE]}, "x.yaml")
    assert public_site(config) is None
    assert certificate_domains(config) == {"get.test"}


def test_the_insights_domain_cannot_be_a_rule_domain():
    with pytest.raises(ConfigError, match=r"insights\.domain: get\.test is also a rule domain"):
        parse_config({"rules": [RULE], "insights": {"domain": "Get.Test."},
                      "listen": {"insights": "tcp:9190:interface=127.0.0.1"}}, "x.yaml")


@pytest.mark.parametrize("listener", [None, "tcp:0:interface=127.0.0.1", "unix:/run/i.sock"])
def test_a_domain_needs_a_fixed_insights_listener(listener):
    with pytest.raises(ConfigError, match=r"insights\.domain.*fixed port"):
        parse_config({"rules": [RULE], "insights": {"domain": "stats.test"},
                      "listen": {"insights": listener}}, "x.yaml")

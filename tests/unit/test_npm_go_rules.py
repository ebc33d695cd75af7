"""npm-v1 and go-v1 in the pure core: what a request is, its event, the rule keys' errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from scarfgw.config import load_config
from scarfgw.rules.decision import Decision, PackumentFetch, Proxy, Redirect, Respond
from scarfgw.rules.fields import RuleError
from scarfgw.rules.manifest import parse_rules
from scarfgw.rules.request import Headers, RequestView
from scarfgw.rules.router import Router

NPM_BACKEND = "https://registry.example.test/npm"
GO_BACKEND = "https://goproxy.example.test"


def router(*rules: dict[str, Any]) -> Router:
    return Router(parse_rules(list(rules), "rules"))


def npm_rule(**keys: Any) -> dict[str, Any]:
    return {"type": "npm-v1", "domain": "npm.example.test", "package-id": "p",
            "packages": ["left-pad"], "scopes": ["@acme"], "backend-url": NPM_BACKEND, **keys}


def go_rule(**keys: Any) -> dict[str, Any]:
    return {"type": "go-v1", "domain": "go.example.test", "package-id": "g",
            "module-path": "go.example.test/Tools", "backend-url": GO_BACKEND, **keys}


def route(table: Router, host: str, path: str, method: str = "GET") -> Decision:
    return table.route(RequestView(method, host, path, None, Headers()))


def npm_event(name: str, version: str | None = None, target: str | None = None
              ) -> tuple[dict[str, Any], ...]:
    return ({"kind": "npm", "package": "p", "name": name, "version": version,
             "target": target},)


@pytest.mark.parametrize(("path", "name", "document"), [
    ("/left-pad", "left-pad", "/left-pad"),
    ("/@acme%2fwidget", "@acme/widget", "/@acme%2fwidget"),
    ("/@acme%2Fwidget", "@acme/widget", "/@acme%2fwidget"),
    ("/@acme/widget", "@acme/widget", "/@acme%2fwidget"),
])
def test_packument_requests_are_fetched_by_the_shell(path: str, name: str, document: str
                                                     ) -> None:
    decision = route(router(npm_rule()), "npm.example.test", path)
    assert decision == Proxy(
        "registry.example.test", "npm", npm_event(name),
        packument=PackumentFetch(name, document, NPM_BACKEND, 32 << 20))


@pytest.mark.parametrize(("path", "name", "version"), [
    ("/left-pad/-/left-pad-1.3.0.tgz", "left-pad", "1.3.0"),
    ("/@acme/widget/-/widget-2.0.0-beta.1.tgz", "@acme/widget", "2.0.0-beta.1"),
    ("/@acme%2fwidget/-/widget-2.0.0.tgz", "@acme/widget", "2.0.0"),
])
def test_tarballs_are_counted_downloads(path: str, name: str, version: str) -> None:
    target = f"{NPM_BACKEND}/{name}/-/{name.rpartition('/')[2]}-{version}.tgz"
    table = router(npm_rule())
    assert route(table, "npm.example.test", path) == Redirect(
        target, "npm", npm_event(name, version, target))
    assert route(table, "npm.example.test", path, "HEAD") == Redirect(
        target, "npm", npm_event(name, version, target))
    proxied = route(router(npm_rule(**{"always-proxy": True})), "npm.example.test", path)
    assert proxied == Proxy("registry.example.test", "npm", npm_event(name, version, target),
                            base_url=NPM_BACKEND, path=target[len(NPM_BACKEND):])


@pytest.mark.parametrize("path", [
    "/right-pad", "/@other/widget", "/left-pad/-/right-pad-1.0.0.tgz",
    "/left-pad/-/left-pad-latest.tgz", "/left-pad/-/left-pad-1.0.0.zip", "/left-pad/1.3.0",
    "/", "/@acme", "/left-pad%2fx",
])
def test_other_paths_are_not_the_rules(path: str) -> None:
    assert route(router(npm_rule()), "npm.example.test", path) == Respond(404, "none")


def test_writes_and_malformed_names_in_a_scope() -> None:
    table = router(npm_rule())
    assert route(table, "npm.example.test", "/left-pad", "PUT") == Respond(404, "none")
    bad = route(table, "npm.example.test", "/@acme/Bad%20Name")
    assert isinstance(bad, Respond) and bad.status == 400 and bad.captures == ()
    long_name = route(table, "npm.example.test", "/@acme/" + "a" * 220)
    assert isinstance(long_name, Respond) and long_name.status == 400


def go_event(module: str, version: str | None, file: str) -> tuple[dict[str, Any], ...]:
    return ({"kind": "go", "package": "g", "module": module, "version": version,
             "file": file},)


@pytest.mark.parametrize(("path", "module", "version", "file"), [
    ("/go.example.test/!tools/@v/list", "go.example.test/Tools", None, "list"),
    ("/go.example.test/!tools/@latest", "go.example.test/Tools", None, "latest"),
    ("/go.example.test/!tools/cmd/@v/v1.2.3.info", "go.example.test/Tools/cmd", "v1.2.3",
     "info"),
    ("/go.example.test/!tools/@v/v1.2.3.mod", "go.example.test/Tools", "v1.2.3", "mod"),
    ("/go.example.test/!tools/@v/v0.0.0-20240101000000-abcdef123456.zip",
     "go.example.test/Tools", "v0.0.0-20240101000000-abcdef123456", "zip"),
    ("/go.example.test/%21tools/@v/v2.0.0-!r!c1+incompatible.zip", "go.example.test/Tools",
     "v2.0.0-RC1+incompatible", "zip"),
])
def test_goproxy_requests(path: str, module: str, version: str | None, file: str) -> None:
    canonical = path.replace("%21", "!")
    decision = route(router(go_rule()), "go.example.test", path)
    assert decision == Redirect(GO_BACKEND + canonical, "go", go_event(module, version, file))
    proxied = route(router(go_rule(**{"always-proxy": True})), "go.example.test", path)
    assert proxied == Proxy("goproxy.example.test", "go", go_event(module, version, file),
                            base_url=GO_BACKEND, path=canonical)


@pytest.mark.parametrize(("path", "status"), [
    ("/go.example.test/Tools/@v/list", 400),
    ("/go.example.test/!tools/@v/1.0.0.zip", 400),
    ("/go.example.test/!tools/@v/v1.0.0%0a.zip", 400),
    ("/go.example.test/!toolsx/@v/list", 404),
    ("/go.example.test/other/@v/list", 404),
    ("/go.example.test/!tools/@v/v1.0.0.tar", 404),
    ("/go.example.test/!tools/@v/", 404),
    ("/go.example.test/!tools", 404),
    ("/go.example.test/!tools/%2e%2e/evil/@v/v1.0.0.zip", 400),
    ("/go.example.test/!tools/x/../../evil/@v/v1.0.0.zip", 400),
])
def test_malformed_and_foreign_goproxy_requests(path: str, status: int) -> None:
    decision = route(router(go_rule()), "go.example.test", path)
    assert isinstance(decision, Respond) and decision.status == status
    assert decision.captures == ()


@pytest.mark.parametrize(("rule", "message"), [
    (npm_rule(packages=[], scopes=None),
     "rules[0].packages: an npm-v1 rule needs 'packages' or 'scopes'"),
    (npm_rule(packages=["Bad Name"]), "rules[0].packages[0]: malformed npm package name"),
    (npm_rule(scopes=["acme"]), "rules[0].scopes[0]: expected a scope like '@example'"),
    (npm_rule(**{"backend-url": "ftp://x"}), "rules[0].backend-url: expected an http(s) URL"),
    (npm_rule(**{"backend-url": "https://x/?q"}), "rules[0].backend-url: expected an http(s)"),
    (npm_rule(**{"max-packument-bytes": 0}), "rules[0].max-packument-bytes: expected a pos"),
    (npm_rule(**{"always-proxy": "yes"}), "rules[0].always-proxy: expected true or false"),
    (go_rule(**{"module-path": "/x//y"}), "rules[0].module-path: malformed Go module path"),
    (go_rule(**{"backend-url": "goproxy.example.test"}), "rules[0].backend-url: expected"),
    (go_rule(**{"module-path": None}), "rules[0].module-path: expected a string, got null"),
])
def test_rule_keys_are_validated(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError) as error:
        parse_rules([rule], "rules")
    assert str(error.value).startswith(message)


def test_backend_url_trailing_slash_and_unknown_keys() -> None:
    warnings: list[str] = []
    [rule] = parse_rules([npm_rule(**{"backend-url": NPM_BACKEND + "/", "extra": 1})], "rules",
                         warnings.append)
    assert warnings == ["rules[0].extra: unknown key ignored"]
    decision = rule.match(RequestView("GET", "npm.example.test", "/left-pad/-/left-pad-1.0.0.tgz",
                                      None, Headers()))
    assert isinstance(decision, Redirect)
    assert decision.location == NPM_BACKEND + "/left-pad/-/left-pad-1.0.0.tgz"


def test_the_commented_examples_of_the_example_config_load(tmp_path: Path) -> None:
    example = (Path(__file__).parents[2] / "etc" / "scarfgw.yaml").read_text()
    uncommented = re.sub(r"(?m)^  # (- type: |  [a-z])", r"  \1", example)
    (tmp_path / "scarfgw.yaml").write_text(uncommented)
    config = load_config(str(tmp_path / "scarfgw.yaml"))
    assert {"npm.example.test", "go.example.test", "apt.example.test"} <= config.router.domains
    assert config.warnings == ()
    npm = route(config.router, "npm.example.test", "/@example/cli/-/cli-1.0.0.tgz")
    assert isinstance(npm, Redirect)
    assert npm.location == "https://registry.npmjs.org/@example/cli/-/cli-1.0.0.tgz"
    deb = route(config.router, "apt.example.test",
                "/debian/pool/main/e/example/example_2%3a1.0-1_amd64.deb")
    assert isinstance(deb, Redirect) and deb.captures[0]["variables"]["version"] == "2:1.0-1"

"""Client runtime and version from real User-Agent strings."""

from __future__ import annotations

import pytest

from scarfgw.analytics.useragent import client_runtime

PIP = (
    'pip/23.2.1 {"ci":null,"cpu":"x86_64","distro":{"id":"bookworm","libc":{"lib":"glibc",'
    '"version":"2.36"},"name":"Debian GNU/Linux","version":"12"},"implementation":{"name":'
    '"CPython","version":"3.11.7"},"installer":{"name":"pip","version":"23.2.1"},'
    '"openssl_version":"OpenSSL 3.0.19 27 Jan 2026","python":"3.11.7","setuptools_version":'
    '"65.5.0","system":{"name":"Linux","release":"6.1.0"}}'
)


@pytest.mark.parametrize(("user_agent", "runtime", "version"), [
    ("docker/27.0.3 go/go1.21.11 git-commit/662f78c kernel/6.5.0-41-generic os/linux "
     "arch/amd64 UpstreamClient(Docker-Client/27.0.3 \\(linux\\))", "docker", "27.0.3"),
    ("containerd/v1.7.11", "containerd", "1.7.11"),
    ("containerd/1.6.21", "containerd", "1.6.21"),
    ("libpod/4.3.1", "podman", "4.3.1"),
    ("containers/5.23.1 (github.com/containers/image)", "podman", "5.23.1"),
    ("skopeo/1.9.3", "skopeo", "1.9.3"),
    (PIP, "pip", "23.2.1"),
    ('uv/0.4.18 {"installer":{"name":"uv","version":"0.4.18"},"python":"3.12.5"}', "uv",
     "0.4.18"),
    ("poetry/1.8.3 CPython/3.11.6 Linux/6.5.0", "poetry", "1.8.3"),
    ("npm/11.19.1 node/v20.20.2 linux x64 workspaces/false", "npm", "11.19.1"),
    ("curl/7.88.1", "curl", "7.88.1"),
    ("containers/5.23.1 (github.com/containers/image)", "podman", "5.23.1"),
    ("Buildah/1.28.2", "buildah", "1.28.2"),
    ("crane/0.20.2 go-containerregistry/0.20.2", "crane", "0.20.2"),
    ("go-containerregistry/v0.19.1", "crane", "0.19.1"),
    ("regclient/regclient (v0.8.0)", "regclient", "0.8.0"),
    ("nerdctl/1.7.6", "nerdctl", "1.7.6"),
    ("Go-http-client/1.1", "go", None),
    ("Go-http-client/2.0", "go", None),
    ("yarn/1.22.22 npm/? node/v20.11.0 linux x64", "yarn", "1.22.22"),
    ("yarn/4.1.0 npm/? node/v20.11.0 linux x64", "yarn", "4.1.0"),
    ("pnpm/9.1.0 npm/? node/v20.11.0 linux x64", "pnpm", "9.1.0"),
    ("Bun/1.1.8", "bun", "1.1.8"),
    ("Debian APT-HTTP/1.3 (2.6.1)", "apt", "2.6.1"),
    ("Debian APT-HTTP/1.3 (2.6.1) non-interactive", "apt", "2.6.1"),
    ("Wget/1.21.3", "wget", "1.21.3"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36", "browser", None),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "browser", None),
])
def test_known_clients(user_agent: str, runtime: str, version: str | None) -> None:
    assert client_runtime(user_agent) == {"runtime": runtime, "version": version}


@pytest.mark.parametrize("user_agent", [
    None, "", "python-requests/2.31.0", "pip", "pip/", "pip/latest", "regclient/regclient",
    " pip/23.2.1", "notpip/23.2.1",
])
def test_unknown_or_malformed_clients_have_no_runtime(user_agent: str | None) -> None:
    assert client_runtime(user_agent) == {"runtime": None, "version": None}


def test_version_is_bounded() -> None:
    assert client_runtime("curl/8.5.0" + "9" * 100)["version"] == "8.5.0" + "9" * 27

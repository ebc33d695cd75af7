#!/usr/bin/env bash
# Install what the tests need (Debian packages when root, Python deps into .venv), then run
# ruff, mypy and the whole pytest suite. Exit status: non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(pebble docker-registry skopeo nginx wrk apache2-utils curl clickhouse-server gcc
                 docker.io containerd podman logrotate debootstrap)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# mypyc compiles against the headers of the python3 that builds .venv
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(
    os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || missing+=(python3-dev)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: missing Debian packages (${missing[*]}); tests that need them will skip" >&2
  fi
fi

make --no-print-directory venv
if [ -z "${SCARFGW_PURE:-}" ] && [ -z "$(find scarfgw -name '*.so' -print -quit)" ]; then
  echo "error: the mypyc-compiled modules did not build (SCARFGW_PURE=1 tests pure Python)" >&2
  exit 1
fi
.venv/bin/ruff check scarfgw twisted tests bench setup.py build_backend
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"

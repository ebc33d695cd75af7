#!/usr/bin/env bash
# Install what the tests need (Debian packages when root, Python deps into .venv), then run
# ruff, mypy and the whole pytest suite. Exit status: non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(pebble docker-registry skopeo nginx wrk apache2-utils curl clickhouse-server)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
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
.venv/bin/ruff check scarfgw twisted tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"

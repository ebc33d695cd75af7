# scarfgw container image: twistd -n scarfgw, as the unprivileged user scarfgw.
#
#   docker build -t scarfgw .
#   docker run -p 8080:8080 -v /srv/scarfgw/scarfgw.yaml:/etc/scarfgw/scarfgw.yaml:ro \
#              -v scarfgw-data:/var/lib/scarfgw scarfgw
#
# The config is read from /etc/scarfgw/scarfgw.yaml (the shipped example until you mount
# yours). /var/lib/scarfgw is a volume: the example (made with --data-dir /var/lib/scarfgw)
# puts the events, their spool, the insights store and the certificate storage there; in a
# config of yours, relative paths start at the config's folder, so name /var/lib/scarfgw/...
# Listen on ports above 1024 (8080, 8443): the user has no privileges.
# The health check asks the admin listener's /readyz at SCARFGW_READYZ_URL.
# BASE replaces the Debian base image (the tests build on a debootstrapped one).
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv python3-dev gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY . /src
# Compiled with mypyc; the build stops here if it fell back to plain Python.
RUN python3 -m venv /opt/scarfgw \
    && /opt/scarfgw/bin/pip install --no-cache-dir /src \
    && /opt/scarfgw/bin/scarfgw --version | grep -q "compiled with mypyc"

FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/scarfgw --create-home --shell /usr/sbin/nologin \
       scarfgw
COPY --from=build /opt/scarfgw /opt/scarfgw
RUN mkdir -p /etc/scarfgw \
    && /opt/scarfgw/bin/scarfgw example-config --data-dir /var/lib/scarfgw > /etc/scarfgw/scarfgw.yaml \
    && /opt/scarfgw/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
USER scarfgw
WORKDIR /var/lib/scarfgw
VOLUME ["/var/lib/scarfgw"]
EXPOSE 8080 8443
ENV SCARFGW_READYZ_URL=http://127.0.0.1:9180/readyz
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/scarfgw/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['SCARFGW_READYZ_URL'], timeout=4)"]
ENTRYPOINT ["/opt/scarfgw/bin/twistd", "--nodaemon", "--pidfile=", "--logfile=-", "scarfgw"]
CMD ["--config", "/etc/scarfgw/scarfgw.yaml"]

#!/usr/bin/env bash
# System tools some tests use (Debian packages): docker-compose (compose file validation),
# prometheus/promtool (scrape config, alert rules), kcat (reading topics by hand),
# chromium (the dashboard test loads the page in a real headless browser), postgresql
# (initdb/pg_ctl under /usr/lib/postgresql/*/bin: private clusters for the fault tests),
# npm for axe-core (the dashboard's accessibility check runs it in that browser), wrk (the
# load of `make bench`'s intake benchmark, which falls back to a slower httpx load without it).
# Installs what is missing when running as root; otherwise says what to install.
set -euo pipefail
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || need+=(postgresql)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
root=no
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then root=yes; fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$root" = yes ]; then
    echo "installing ${need[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]} (install them to run every test)" >&2
  fi
fi
# axe-core from npm's registry, where the dashboard test looks for it (npm root -g).
if command -v npm >/dev/null 2>&1 && [ ! -f "$(npm root -g)/axe-core/axe.min.js" ]; then
  if [ "$root" = yes ]; then
    echo "installing axe-core (npm)"
    npm install -g --silent axe-core >/dev/null || echo "axe-core could not be installed: its test skips" >&2
  else
    echo "missing: axe-core (npm install -g axe-core) for the dashboard's accessibility test" >&2
  fi
fi

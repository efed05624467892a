#!/bin/sh
# Install what omnicc needs to build, run and test, from Debian 12 packages.
# Runs apt-get only for packages that are missing, so a second run is quick.
set -eu
PKGS="meson ninja-build pkg-config gcc libc6-dev
  libevent-dev libhiredis-dev libcurl4-openssl-dev libesmtp-dev libjansson-dev libssl-dev
  libsystemd-dev libcmocka-dev redis-server redis-tools python3 python3-redis wrk curl
  libncurses-dev openssl"
# The browser tests (suite 'browser'): Debian's chromium, and node/npm for playwright-core
# (tools/test runs npm ci). Node.js from elsewhere (it ships its own npm) is used as it is.
# `tools/deps.sh --run` (tools/run) skips them.
if [ "${1:-}" != "--run" ]; then
  PKGS="$PKGS chromium fonts-dejavu-core"
  # the branch tests: the teller terminal driven under tmux
  PKGS="$PKGS tmux iproute2"
  command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
  command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages:$missing (run as root, or install them)" >&2
    exit 1
  fi
  echo "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

#!/bin/sh
# Install what omnicc needs to build, run and test, from Debian 12 packages.
# Runs apt-get only for packages that are missing, so a second run is quick.
set -eu
PKGS="meson ninja-build pkg-config gcc libc6-dev
  libevent-dev libhiredis-dev libcurl4-openssl-dev libesmtp-dev libjansson-dev libssl-dev
  libsystemd-dev libcmocka-dev redis-server redis-tools python3 python3-redis wrk curl"
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

#!/bin/sh
# Install what omnicc needs to build, run and test, from Debian 12 packages.
# Runs apt-get only for packages that are missing, so a second run is quick.
set -eu
PKGS="meson ninja-build pkg-config gcc libc6-dev
  libevent-dev libhiredis-dev libcurl4-openssl-dev libesmtp-dev libjansson-dev libssl-dev
  libsystemd-dev libcmocka-dev redis-server redis-tools python3 python3-redis wrk curl
  libgmime-3.0-dev libxml2-dev
  libncurses-dev openssl
  libtiff-dev libtesseract-dev tesseract-ocr tesseract-ocr-spa tesseract-ocr-eng
  libpoppler-glib-dev libcairo2-dev"
# The browser tests (suite 'browser'): Debian's chromium, and node/npm for playwright-core
# (tools/test runs npm ci). Node.js from elsewhere (it ships its own npm) is used as it is.
# `tools/deps.sh --run` (tools/run) skips them.
if [ "${1:-}" != "--run" ]; then
  PKGS="$PKGS chromium fonts-dejavu-core"
  # the email tests: a real IMAP server and a scriptable SMTP server
  PKGS="$PKGS dovecot-imapd python3-aiosmtpd"
  # strace: the reply-attachment test proves which thread writes and fsyncs the files
  PKGS="$PKGS strace"
  # the branch tests: the teller terminal driven under tmux (iproute2: network namespaces
  # for cutting a terminal's link by hand, see docs/BRANCH.md)
  PKGS="$PKGS tmux iproute2"
  # the systemd test: systemd-analyze verify and security on the unit
  PKGS="$PKGS systemd"
  # the fax tests: fax pages made with Ghostscript, tiff2pdf, Ed25519 signing in Python;
  # qpdf makes PDFs with object streams and encrypted ones, poppler-utils' pdfinfo and
  # pdfimages read the PDFs omniccd makes of TIFF faxes
  PKGS="$PKGS ghostscript libtiff-tools python3-cryptography qpdf poppler-utils"
  # the HylaFAX sender's test: a real faxq + hfaxd in a spool of its own (no modem), and
  # the sendfax / faxstat / faxrm clients
  PKGS="$PKGS hylafax-server hylafax-client"
  # the failover test: three redis-sentinels watching a primary and two replicas
  PKGS="$PKGS redis-sentinel"
  # the analytics test: the export loaded into a real PostgreSQL (initdb + pg_ctl, temp dir)
  PKGS="$PKGS postgresql"
  # the fuzzing campaign (docs/FUZZING.md, tools/fuzz): clang and its libFuzzer runtime
  PKGS="$PKGS clang libclang-rt-14-dev"
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

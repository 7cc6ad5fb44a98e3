#!/usr/bin/env bash
# The machine packages the test suite drives for real: Debian's chromium (the browser tests,
# through Playwright; `playwright install` is never used), Prometheus with promtool (the
# metrics tests start their own), and a C compiler with libjpeg-turbo's headers (the bench's
# codec floor, bench/floor.py, which the bench smoke test compiles). Installed with apt when missing; `make test` and .ci/run
# call this, so a fresh machine needs nothing done by hand.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  missing+=(prometheus)
fi
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
[ -f /usr/include/jpeglib.h ] || missing+=(libjpeg62-turbo-dev)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "missing packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo="sudo"
fi
echo "installing ${missing[*]} with apt-get (one time) ..."
$sudo apt-get update -qq -o DPkg::Lock::Timeout=600
# prometheus without its recommends (no node exporter); the packaged service is stopped so
# it neither holds port 9090 nor scrapes anything.
$sudo apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  ($sudo service prometheus stop || $sudo systemctl stop prometheus) >/dev/null 2>&1 || true
fi

#!/usr/bin/env bash
# Set up everything the app (and, with --dev, the test suite) needs on a fresh
# Debian machine: system packages when running as root, then a virtualenv in
# .venv with the pinned Python requirements. Safe to run again: it only installs
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

# Debian packages: a real Orthanc (with DICOMweb and GDCM for JPEG 2000/JPEG-LS),
# headless Chromium for the browser tests and Redis for the scale-out tests.
apt_pkgs=()
if [ "$dev" = 1 ]; then
  apt_pkgs+=(orthanc orthanc-dicomweb orthanc-gdcm chromium chromium-driver redis-server)
fi
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    # The orthanc and redis-server packages would start system services; a
    # policy denies that, the tests start private instances of their own.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages ${missing[*]}; install them as root" >&2
  fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
req=requirements.txt
[ "$dev" = 1 ] && req=requirements-dev.txt
stamp=".venv/.installed-$(sha1sum requirements*.txt | sha1sum | cut -c1-12)-$dev"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  touch "$stamp"
fi

#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are missing.
# Runs apt-get only as root on a Debian-like system; otherwise it says what
# is missing and fails, so a build never starts half-equipped.
set -euo pipefail
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing build dependencies: ${missing[*]} (install them, or run 'make check' as root on Debian)" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

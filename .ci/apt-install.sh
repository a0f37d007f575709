#!/usr/bin/env bash
# Install Debian packages a system test needs, once: `apt-install.sh NAME "COMMANDS" PACKAGES... -- WHY`.
# Does nothing when every command in COMMANDS is already on the PATH; does nothing and says why where it cannot
# install (not root, or no apt-get). NAME prefixes its messages; WHY says what the packages are for.
set -euo pipefail

name="$1"; commands="$2"; shift 2
packages=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do packages+=("$1"); shift; done
why="${2:-}"

missing=0
for command in $commands; do command -v "$command" >/dev/null || missing=1; done
if [ "$missing" -eq 0 ]; then
    echo "$name: ${packages[*]} already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$name: not root, skipping (install ${packages[*]} yourself $why)"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "$name: no apt-get, skipping (install ${packages[*]} yourself $why)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "$name: installed ${packages[*]}"

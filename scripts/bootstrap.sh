#!/usr/bin/env bash
# Installs everything bluegreen needs on a fresh Debian 12 / Ubuntu machine, and nothing twice:
# Debian packages (only the missing ones), the .venv/ and the pinned requirements.
# Usage: scripts/bootstrap.sh [runtime|dev]   (dev adds test and lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-dev}
# openssh-server, sudo, iproute2: the SSH lab (bluegreen/sshlab.py) gives each host its own sshd, a sudoer
apt_packages=(haproxy openssh-server sudo python3-venv iproute2 curl)
# dev: chromium for the browser tests, systemd for systemd-analyze (the unit templates' test)
[ "$flavour" = dev ] && apt_packages+=(chromium systemd)

missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    # policy-rc.d on minimal images keeps haproxy/sshd system services from starting; the lab runs its own.
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi

req=requirements-dev.txt
[ "$flavour" = dev ] || req=requirements.txt
stamp=.venv/.bootstrap-$flavour
# Re-install only when a requirements file or a package definition changed since the last run.
if [ ! -f "$stamp" ] || [ -n "$(find requirements*.txt pyproject.toml logplatform/pyproject.toml -newer "$stamp" 2>/dev/null)" ]; then
    echo "bootstrap: installing $req into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -r "$req"
    .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . -e logplatform
    touch "$stamp"
fi

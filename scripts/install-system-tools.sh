#!/usr/bin/env bash
# Installs the system tools some tests need, from Debian's packages, when they
# are not on PATH already: haproxy, and promtool (Debian's `prometheus`
# package) for checking the Kubernetes alert rules. Idempotent: with both
# present it returns at once.
#
# kubectl (1.27 or later, for Kustomize 5), which renders deploy/kubernetes/
# in the unit tests, is not installable this way (Debian 12's
# kubernetes-client is 1.20): this script only says when it is missing.
#
# Runs apt-get as root, or through sudo when that works without a password;
# otherwise it prints what to run and exits non-zero. `apt-get update` runs
# only when the first install fails (stale or missing package lists).
#
# On a host with systemd the prometheus package may start a prometheus
# service (port 9090); nothing here uses it, so it can be stopped or
# disabled freely.
set -euo pipefail

if ! command -v kubectl >/dev/null 2>&1; then
  echo "[install-system-tools] kubectl is not on PATH: the Kubernetes manifest tests need kubectl 1.27+" \
    "from the Kubernetes project's releases (Debian's kubernetes-client is too old)" >&2
fi

# haproxy lands in /usr/sbin, which a non-root PATH may leave out.
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }

packages=()
have haproxy || packages+=(haproxy)
have promtool || packages+=(prometheus)
if [[ ${#packages[@]} -eq 0 ]]; then
  exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "[install-system-tools] missing: ${packages[*]}; installing them needs root. Run:" >&2
  echo "  sudo apt-get install -y --no-install-recommends ${packages[*]}   (after sudo apt-get update if it fails)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[install-system-tools] missing: ${packages[*]}, and apt-get is not here;" \
    "install haproxy and promtool (Prometheus) with this system's package manager" >&2
  exit 1
fi

start=$(date +%s)
echo "[install-system-tools] installing ${packages[*]}"
install=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends)
if ! "${install[@]}" "${packages[@]}" >/dev/null; then
  echo "[install-system-tools] first install failed; refreshing the package lists"
  "${as_root[@]}" apt-get update -q >/dev/null
  "${install[@]}" "${packages[@]}" >/dev/null
fi
for tool in haproxy promtool; do
  if ! have "$tool"; then
    echo "[install-system-tools] $tool is still not on PATH after installing ${packages[*]}" >&2
    exit 1
  fi
done
echo "[install-system-tools] done in $(( $(date +%s) - start )) s"

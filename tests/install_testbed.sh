#!/usr/bin/env bash
# Installs what tests/testbed.py starts (a one-node SLURM cluster with accounting, and the
# network namespaces that keep a Ray head on loopback) and the headless Chromium that renders
# sagan report --format html in its test, when missing and when run as root.
# The nox tests session runs it before pytest; elsewhere the cluster tests skip with a reason.
set -euo pipefail
needed=(slurmctld slurmd slurmdbd munged mariadbd sbatch sacct ip chromium)
missing=()
for binary in "${needed[@]}"; do
    command -v "$binary" >/dev/null 2>&1 || missing+=("$binary")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install_testbed: SLURM, munge, MariaDB, iproute2 and Chromium are installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_testbed: missing ${missing[*]}; not root with apt-get, so the cluster tests will skip"
    exit 0
fi
echo "install_testbed: installing slurm-wlm slurmdbd munge mariadb-server iproute2 chromium (missing: ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server iproute2 chromium >/dev/null
# the packages' own services are not used: the tests start their own on free ports
for service in slurmctld slurmd slurmdbd munge mariadb; do
    (command -v systemctl >/dev/null && systemctl stop "$service") >/dev/null 2>&1 || true
done

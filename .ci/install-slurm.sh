#!/usr/bin/env bash
# Install SLURM and munge from Debian's packages so tests/test_slurm.py can run a
# single-node cluster on this machine. Idempotent; does nothing (and says why)
# where it cannot install: not root, or no apt-get.
set -euo pipefail

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    echo "install-slurm: slurm-wlm and munge already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-slurm: not root, skipping (install slurm-wlm and munge yourself to run tests/test_slurm.py)"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-slurm: no apt-get, skipping (install slurm-wlm and munge yourself to run tests/test_slurm.py)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# slurm-client provides sbatch/squeue/scancel; slurm-wlm pulls slurmctld and slurmd.
apt-get install -y -qq --no-install-recommends slurm-wlm slurm-client munge >/dev/null
echo "install-slurm: installed $(slurmctld -V) and $(munged --version 2>&1 | head -n 1)"

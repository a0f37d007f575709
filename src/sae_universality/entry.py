"""What every Snakemake script does around its one call into the package.

`run_script(snakemake, main)`: send stderr (warnings, progress bars) to the
job's log, use the job's threads for torch and BLAS, and turn a `UserError` into one
line in the log and a failed job, with no traceback.
"""

from __future__ import annotations

import os
import sys


def run_script(snakemake, main) -> None:
    """Call `main(snakemake)` with the log and threads of the job set up."""
    log = open(snakemake.log[0], "w", buffering=1) if snakemake.log else None
    if log is not None:
        sys.stderr = log
    # Read by torch (and numpy's BLAS) when first imported: no import cost for jobs without torch.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(max(1, int(snakemake.threads)))
    from .errors import UserError

    try:
        main(snakemake)
    except UserError as error:
        print(f"sae-universality: {error}", file=sys.stderr)
        if log is not None:
            print(f"sae-universality: {error}", file=sys.__stderr__)
        sys.exit(1)

"""What every Snakemake script does around its one call into the package.

`run_script(snakemake, main)`: send stderr (warnings, progress bars) to the
job's log, use the job's threads for torch, and turn a `UserError` into one
line in the log and a failed job, with no traceback.
"""

from __future__ import annotations

import sys


def run_script(snakemake, main) -> None:
    """Call `main(snakemake)` with the log and threads of the job set up."""
    log = open(snakemake.log[0], "w", buffering=1) if snakemake.log else None
    if log is not None:
        sys.stderr = log
    try:
        import torch

        torch.set_num_threads(max(1, int(snakemake.threads)))
    except ImportError:
        pass
    from .errors import UserError

    try:
        main(snakemake)
    except UserError as error:
        print(f"sae-universality: {error}", file=sys.stderr)
        if log is not None:
            print(f"sae-universality: {error}", file=sys.__stderr__)
        sys.exit(1)

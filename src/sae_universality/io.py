"""File helpers shared by every stage: nothing half-written is ever taken as done."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file lives in the same folder so the final rename is atomic
    on POSIX file systems (shared cluster file systems included).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any other file
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Like `atomic_path` for a folder: fill a temporary sibling folder, then rename it into place."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(temporary, 0o777 & ~_umask())
    try:
        yield temporary
        if path.exists():
            shutil.rmtree(path)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


# Which rule writes the files under a results folder: named when one of them is found damaged.
_MAKERS = (("results/activations/", "shards/", "cache_activations"), ("results/activations/", "", "merge_activations"),
           ("results/codes/", "", "encode_features"), ("results/alignment/", "", "align_positions"),
           ("results/saes/", "", "train_sae or load_pretrained_sae"), ("results/checkpoints/", "", "train_sae"))


def damaged_file_message(path: str | Path, error: BaseException) -> str:
    """One line: which file could not be read, why, and how to get it back (delete it, rerun the rule)."""
    text = str(path).replace("\\", "/")
    rule = next((maker for folder, part, maker in _MAKERS if folder in text and part in text), None)
    reason = (str(error).splitlines() or [type(error).__name__])[0]
    remedy = f"Snakemake remakes it (rule {rule})" if rule else "Snakemake remakes it from the rule that writes it"
    return f"{path} is damaged or incomplete ({reason}); delete it and rerun: {remedy}"


@contextlib.contextmanager
def open_hdf5(path: str | Path) -> Iterator["h5py.File"]:
    """An HDF5 file of this workflow, opened for reading; a damaged one ends in one line naming it.

    A disk that filled up or a job killed outside Snakemake leaves truncated files
    that h5py refuses with a 20-line traceback.
    """
    import h5py

    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as error:
        from .errors import UserError

        raise UserError(damaged_file_message(path, error)) from None
    with handle:
        yield handle


def read_checked(path: str | Path, read):
    """`read(path)` for a file a job wrote (JSON, safetensors, a torch checkpoint); one line naming it when it
    is damaged. A missing file stays FileNotFoundError: its callers say what is missing."""
    try:
        return read(path)
    except FileNotFoundError:
        raise
    except Exception as error:  # each format fails its own way (JSONDecodeError, SafetensorError, EOFError, ...)
        from .errors import UserError

        raise UserError(damaged_file_message(path, error)) from None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it: read at call time, so a job's environment decides."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_tsv(table, path: str | Path) -> None:
    """A pandas table as a tab-separated file, floats to 6 significant digits, written aside then renamed."""
    with atomic_path(path, suffix=".tsv") as temporary:
        table.to_csv(temporary, sep="\t", index=False, float_format="%.6g")

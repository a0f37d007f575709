"""Sparse feature codes of an activation cache, stored in HDF5 as CSR.

A codes file holds, for each row (position) of an activation cache, the latents
that are nonzero and their values:

| dataset | shape | dtype | meaning |
|---|---|---|---|
| `indptr` | (N + 1,) | int64 | row i's entries are [indptr[i], indptr[i + 1]) |
| `indices` | (nnz,) | int32 | latent index of each entry (ascending within a row) |
| `values` | (nnz,) | float32 | its activation |

Attributes: n_positions, n_features, kind ("codes": the SAE's sparse codes, or
"pre_activations": ReLU(W_enc (x - b_dec) + b_enc) before TopK/threshold),
source_activations. Rows keep the order of the activation cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse
import torch

from sae_universality.errors import UserError
from sae_universality.io import open_hdf5
from sae_universality.saes.architectures import SparseAutoencoder


def _csr_pieces(sae: SparseAutoencoder, x: np.ndarray, pre_activations: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts per row (n,), latent indices and values of the nonzero codes of x (n, d_in), row-major."""
    with torch.no_grad():
        pre = sae.pre_activations(torch.from_numpy(x).to(sae.device))
        if pre_activations:
            rows, latents = pre.nonzero(as_tuple=True)  # row-major, so latents ascend within a row
            values = pre[rows, latents]
        else:
            active = sae.select(pre)
            positive = active.values > 0
            rows, latents, values = active.rows[positive], active.latents[positive], active.values[positive]
            order = torch.argsort(rows * sae.cfg.d_sae + latents)
            rows, latents, values = rows[order], latents[order], values[order]
    counts = np.bincount(rows.cpu().numpy(), minlength=len(x))
    return counts, latents.cpu().numpy().astype(np.int32), values.cpu().numpy().astype(np.float32)


def encode_cache_to_codes(sae: SparseAutoencoder, activations_path: str | Path, out_path: str | Path,
                          batch_size: int = 2048, pre_activations: bool = False) -> Path:
    """Stream an activation cache through the SAE and write its codes (or pre-activations) as CSR.

    Pre-activations are dense (about half of all latents are positive), so their
    file is roughly n_positions * d_sae * 4 bytes.
    Returns out_path, written to a temporary name and renamed when complete.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        with open_hdf5(activations_path) as source, h5py.File(temporary, "w") as out:
            if "activations" not in source:
                raise UserError(f"{activations_path} has no 'activations' dataset; it is not an activation cache")
            activations = source["activations"]
            n_positions, d_in = activations.shape
            if d_in != sae.cfg.d_in:
                raise UserError(f"the SAE reads d_in={sae.cfg.d_in} but {activations_path} holds width {d_in}; pair the SAE with its model and layer")
            indptr = np.zeros(n_positions + 1, dtype=np.int64)
            indices = out.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 18,))
            values = out.create_dataset("values", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1 << 18,))
            for start in range(0, n_positions, batch_size):
                stop = min(start + batch_size, n_positions)
                counts, latents, acts = _csr_pieces(sae, np.asarray(activations[start:stop], dtype=np.float32), pre_activations)
                indptr[start + 1:stop + 1] = indptr[start] + np.cumsum(counts)
                nnz_before = indices.shape[0]
                indices.resize((nnz_before + len(latents),))
                values.resize((nnz_before + len(acts),))
                indices[nnz_before:] = latents
                values[nnz_before:] = acts
            out.create_dataset("indptr", data=indptr)
            out.attrs.update(n_positions=n_positions, n_features=sae.cfg.d_sae,
                             kind="pre_activations" if pre_activations else "codes",
                             source_activations=str(activations_path))
        os.replace(temporary, out_path)
    finally:
        temporary.unlink(missing_ok=True)
    return out_path


def read_code_rows(path: str | Path, start: int, stop: int) -> scipy.sparse.csr_matrix:
    """Rows [start, stop) of a codes file as a (stop - start, n_features) CSR matrix."""
    with open_hdf5(path) as handle:
        n_positions, n_features = int(handle.attrs["n_positions"]), int(handle.attrs["n_features"])
        if not 0 <= start <= stop <= n_positions:
            raise ValueError(f"rows [{start}, {stop}) are outside the {n_positions} rows of {path}")
        indptr = handle["indptr"][start:stop + 1]
        indices = handle["indices"][indptr[0]:indptr[-1]]
        values = handle["values"][indptr[0]:indptr[-1]]
    return scipy.sparse.csr_matrix((values, indices, indptr - indptr[0]), shape=(stop - start, n_features))


def iter_code_chunks(path: str | Path, rows=None, chunk_rows: int = 65_536) -> Iterator[scipy.sparse.csr_matrix]:
    """CSR matrices (<= chunk_rows, n_features) of the given rows, in the order given.

    rows: int array of row indices (e.g. an alignment's rows_a); None = all rows.
    Each chunk reads the one contiguous span of the file between its smallest and
    largest row, so sorted rows (like an alignment's) read each part of the file
    once; rows in any order are allowed and come back in that order.
    """
    with open_hdf5(path) as handle:
        n_positions, n_features = int(handle.attrs["n_positions"]), int(handle.attrs["n_features"])
        indptr_file, indices_file, values_file = handle["indptr"], handle["indices"], handle["values"]
        if rows is None:
            for start in range(0, n_positions, chunk_rows):
                stop = min(start + chunk_rows, n_positions)
                indptr = indptr_file[start:stop + 1]
                yield scipy.sparse.csr_matrix((values_file[indptr[0]:indptr[-1]], indices_file[indptr[0]:indptr[-1]], indptr - indptr[0]),
                                              shape=(stop - start, n_features))
            return
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n_positions):
            raise ValueError(f"row indices must lie in [0, {n_positions}) for {path}")
        for chunk_start in range(0, len(rows), chunk_rows):
            chunk = rows[chunk_start:chunk_start + chunk_rows]
            first, last = chunk.min(), chunk.max()
            span_indptr = indptr_file[first:last + 2]
            base = span_indptr[0]
            span_indices = indices_file[base:span_indptr[-1]]
            span_values = values_file[base:span_indptr[-1]]
            # entries of each requested row, gathered in the requested order
            starts = span_indptr[chunk - first] - base
            lengths = span_indptr[chunk - first + 1] - base - starts
            out_indptr = np.concatenate([[0], np.cumsum(lengths)])
            gather = np.repeat(starts - out_indptr[:-1], lengths) + np.arange(out_indptr[-1])
            yield scipy.sparse.csr_matrix((span_values[gather], span_indices[gather], out_indptr), shape=(len(chunk), n_features))


def feature_columns(codes_path: str | Path, rows: np.ndarray, features: Sequence[int],
                    chunk_rows: int = 65_536) -> np.ndarray:
    """(len(rows), len(features)) the activations of `features` at `rows` of a codes file, dense, streamed."""
    features = np.asarray(features, dtype=np.int64)
    parts = [chunk[:, features].toarray() for chunk in iter_code_chunks(codes_path, rows, chunk_rows)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, len(features)))

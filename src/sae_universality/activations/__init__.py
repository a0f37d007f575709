"""The activations stage: residual streams cached to HDF5, aligned across tokenizers, streamed as batches."""

"""The SAE stage: architectures, training, evaluation, file formats, and the codes every later stage reads."""

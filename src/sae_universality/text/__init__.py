"""The text stage: context windows cut from a corpus (Wikipedia sample, files, a hub dataset)."""

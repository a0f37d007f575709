"""Do two language models learn the same features? Compare their SAE feature spaces."""

__version__ = "0.1.0"

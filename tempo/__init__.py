"""tempo: sampling-temperature control for RLVR training of language models."""

__version__ = "0.1.0"

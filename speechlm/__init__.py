"""speechlm: speech and audio foundation models with Kaldi-style recipes."""
__version__ = "0.1.0"

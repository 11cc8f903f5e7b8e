"""Speech encoders: Transformer, Conformer, E-Branchformer (ESPnet-compatible)."""
from speechlm.encoders.base import EncoderOutput

__all__ = ["EncoderOutput"]

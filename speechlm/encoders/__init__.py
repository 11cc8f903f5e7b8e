"""Speech encoders: Transformer, Conformer, E-Branchformer (ESPnet-compatible)."""
from speechlm.encoders.base import EncoderOutput, StemOutput

__all__ = ["EncoderOutput", "StemOutput"]

"""Models: nn.Modules that combine encoders, decoders and heads and define a loss. Every
model follows `speechlm.models.protocol` (forward, encode, checkpoint_criterion,
default_search); `speechlm.models.build` builds one from its config, with pretrained parts.

    ctc_attention.py   hybrid CTC/attention (ESPnet's ESPnetASRModel), incl. CTC-only
    transducer.py      RNN-T with an optional auxiliary CTC head
"""
from speechlm.models.protocol import Search, SpeechModel

__all__ = ["Search", "SpeechModel"]

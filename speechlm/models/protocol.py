"""The model protocol: what every speechlm model exposes, and all that the entry points
(`speechlm.bin.train`, `decode`, `transcribe`, `average_checkpoints`) use of it.

    class MyModel(nn.Module):
        checkpoint_criterion = ("valid/loss", "min")   # what training keeps the best of
        default_search = {"_target_": "my_pkg.MySearch", "beam_size": 4}   # or None

        def forward(self, batch: dict) -> dict[str, Tensor]: ...   # {"loss": ..., stats}
        def encode(self, audio: Tensor, lengths: Tensor) -> EncoderOutput: ...

- `forward(batch)`: the batch is what the data module's collate made of the items (`audio`
  (B, T), `audio_lens` (B,), and whatever item transforms added: `tokens`/`token_lens`,
  `lang`, `km`/`km_lens`, ...). It returns `loss` (with grad) and any scalar stats, which
  training logs as `train/NAME` and `valid/NAME`.
- `encode(audio, lengths)`: waveforms (or features, without a frontend) -> `EncoderOutput`
  (output (B, T', D), lengths (B,), intermediate layers).
- `checkpoint_criterion`: (metric, "min" | "max") the best checkpoints are kept (and later
  averaged) by; training writes it into every checkpoint (`speechlm.checkpoint_criterion`).
- `default_search`: a Hydra node (`_target_` + arguments) of the search that decodes the
  model unless the decode config names another, or None for models that are not decoded
  (pretraining). A search is called `search(model, encoder_output)` and returns each
  utterance's best token ids; a search belongs to a model family and may read that
  family's parts (`model.decoder`, `model.ctc`, `model.joiner`, ...).

A model family is a model file, its search, and its conf node (conf/model/NAME.yaml, with
`_target_`); nothing under `speechlm/bin/` names a model class.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from speechlm.encoders.base import EncoderOutput


@runtime_checkable
class SpeechModel(Protocol):
    checkpoint_criterion: tuple[str, str]
    default_search: dict[str, Any] | None

    def forward(self, batch: dict) -> dict[str, Tensor]: ...

    def encode(self, audio: Tensor, lengths: Tensor) -> EncoderOutput: ...


class Search(Protocol):
    def __call__(self, model: Any, enc: EncoderOutput) -> list[list[int]]: ...

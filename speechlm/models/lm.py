"""Language models over token ids: `TransformerLM` and `LSTMLM`, architecturally ESPnet's
`espnet2/lm/transformer_lm.py` TransformerLM and `espnet2/lm/seq_rnn_lm.py`
SequentialRNNLM (same arguments, defaults and computation), so an ESPnet LM's weights load
with identical scores (`speechlm.interop.espnet_lm`).

Training (`speechlm.bin.train experiment=lm_transformer`): `forward(batch)` reads `tokens`
(B, L) padded and `token_lens` (B,) without sos/eos, predicts `sos w1 .. wn` -> `w1 .. wn eos`
and returns the mean per-token NLL (eos included, ESPnet's `ESPnetLanguageModel` loss).

Decoding (shallow fusion in `speechlm.search`): the incremental protocol every
autoregressive part of speechlm shares, batched over N rows (hypotheses):

    state = lm.init_state(n, device)
    log_probs, state = lm.step(tokens, state)   # tokens (N,), the first call gives sos -> (N, V)
    state = lm.select_state(state, index)       # rows kept / reordered (N',)

`score(tokens, token_lens)` gives each sequence's total log-probability (eos included), for
rescoring and parity tests. `load_language_model(path)` loads a speechlm LM checkpoint or an
ESPnet LM (`config.yaml` beside the `.pth`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechlm.encoders.transformer import TransformerBlock
from speechlm.nn.attention import MultiHeadAttention
from speechlm.nn.feed_forward import FeedForward
from speechlm.nn.masks import valid_mask
from speechlm.nn.norm import LayerNorm
from speechlm.nn.positional import NoPositionalEncoding, PositionalEncoding
from speechlm.nn.subsampling import LinearInput


def _no_audio_parts(model: str, **parts: Any) -> None:
    """conf/train.yaml composes audio parts into every model node; an LM reads none."""
    given = [name for name, part in parts.items() if part is not None]
    if given:
        raise ValueError(f"{model} reads text only, but model.{'/'.join(given)} are set: train it with "
                         "experiment=lm_transformer (or lm_lstm, causal_lm), which sets them to null")


class LanguageModel(nn.Module):
    """What both LMs share: sos/eos, the teacher-forced loss and whole-sequence scores.
    A subclass gives `logits(inputs (B, L)) -> (B, L, V)` (causal) and the step protocol."""

    checkpoint_criterion = ("valid/loss", "min")
    default_search = None

    def __init__(self, vocab_size: int, special_ids: dict[str, int] | None):
        super().__init__()
        special_ids = dict(special_ids or {})
        self.vocab_size = vocab_size
        # ESPnet's layout when no tokenizer says otherwise: sos = eos = the last id
        self.sos = int(special_ids.get("sos", vocab_size - 1))
        self.eos = int(special_ids.get("eos", vocab_size - 1))

    def logits(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def token_log_probs(self, tokens: Tensor, token_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log p of each target (B, L+1), mask of real targets (B, L+1), argmax hits (B, L+1)):
        inputs `sos w1 .. wn`, targets `w1 .. wn eos` (padding beyond n)."""
        tokens = tokens[:, : int(token_lens.max())] if tokens.shape[1] else tokens
        # padding may be any value (collate pads with IGNORE_ID = -1): make it an id
        tokens = tokens.masked_fill(~valid_mask(token_lens, tokens.shape[1]), 0)
        b = tokens.shape[0]
        inputs = torch.cat([tokens.new_full((b, 1), self.sos), tokens], dim=1)
        targets = torch.cat([tokens, tokens.new_zeros(b, 1)], dim=1)
        targets[torch.arange(b, device=tokens.device), token_lens] = self.eos
        mask = valid_mask(token_lens + 1, targets.shape[1])
        targets = targets.masked_fill(~mask, 0)
        log_probs = self.logits(inputs).float().log_softmax(dim=-1)
        picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return picked.masked_fill(~mask, 0.0), mask, (log_probs.argmax(-1) == targets) & mask

    def forward(self, batch: dict) -> dict[str, Tensor]:
        picked, mask, hits = self.token_log_probs(batch["tokens"], batch["token_lens"])
        if "loss_mask" in batch:  # the tokens the loss is on (speechlm.train.text_data_module, loss_on), + eos
            keep = batch["loss_mask"][:, : mask.shape[1] - 1].to(mask.device)
            keep = torch.cat([keep, keep.new_zeros(keep.shape[0], mask.shape[1] - keep.shape[1])], dim=1)
            keep[torch.arange(len(keep), device=keep.device), batch["token_lens"].to(keep.device)] = True
            mask = mask & keep
            picked, hits = picked.masked_fill(~mask, 0.0), hits & mask
        n = mask.sum()
        loss = -picked.sum() / n
        return {"loss": loss, "ppl": loss.detach().exp(), "acc": hits.sum() / n}

    def score(self, tokens: Tensor, token_lens: Tensor) -> Tensor:
        """tokens (B, L) padded, token_lens (B,) -> (B,) log p(w1 .. wn eos)."""
        return self.token_log_probs(tokens, token_lens)[0].sum(dim=1)


class TransformerState(NamedTuple):
    """`TransformerLM`'s incremental state for N rows."""

    keys: list[Tensor]  # per block (N, H, L, d_k): self-attention keys of the L tokens seen
    values: list[Tensor]  # per block (N, H, L, d_k)


class TransformerLMStack(nn.Module):
    """ESPnet's `Encoder` as its TransformerLM builds it (input_layer linear, pre-norm
    `EncoderLayer`s, ReLU FFN): embed.{0: Linear, 1: LayerNorm, 2: Dropout, 3: ReLU},
    then the positional encoding (none by default), the blocks and after_norm."""

    def __init__(self, idim: int, size: int, heads: int, units: int, blocks: int, dropout_rate: float,
                 positional_dropout_rate: float, attention_dropout_rate: float, pos_enc: str | None):
        super().__init__()
        self.embed = LinearInput(idim, size, dropout_rate, relu=True)
        if pos_enc == "sinusoidal":
            self.pos_enc = PositionalEncoding(size, positional_dropout_rate)
        elif pos_enc is None:
            self.pos_enc = NoPositionalEncoding(size, positional_dropout_rate)
        else:
            raise ValueError(f"unknown pos_enc {pos_enc!r} (null or sinusoidal, as ESPnet)")
        self.encoders = nn.ModuleList(
            TransformerBlock(size, MultiHeadAttention(heads, size, attention_dropout_rate),
                             FeedForward(size, units, dropout_rate, nn.ReLU()), dropout_rate)
            for _ in range(blocks))
        self.after_norm = LayerNorm(size)

    def stem(self, x: Tensor, offset: int = 0) -> Tensor:
        x = self.embed[3](self.embed[2](self.embed[1](self.embed[0](x))))
        if isinstance(self.pos_enc, PositionalEncoding):
            return self.pos_enc(x, offset=offset)[0]
        return self.pos_enc(x)[0]


class TransformerLM(LanguageModel):
    """ESPnet's TransformerLM: Embedding(V, embed_unit) -> Linear + LayerNorm + ReLU to
    att_unit -> `layer` pre-norm self-attention blocks (causal) -> LayerNorm -> Linear(V).
    Arguments and defaults are ESPnet's; `special_ids` (the tokenizer's) place sos/eos."""

    def __init__(
        self,
        vocab_size: int,
        special_ids: dict[str, int] | None = None,
        pos_enc: str | None = None,
        embed_unit: int = 128,
        att_unit: int = 256,
        head: int = 2,
        unit: int = 1024,
        layer: int = 4,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
        frontend: Any = None,
        specaug: Any = None,
        normalize: Any = None,
    ):
        _no_audio_parts("TransformerLM", frontend=frontend, specaug=specaug, normalize=normalize)
        super().__init__(vocab_size, special_ids)
        self.embed = nn.Embedding(vocab_size, embed_unit)
        self.encoder = TransformerLMStack(embed_unit, att_unit, head, unit, layer, dropout_rate,
                                          positional_dropout_rate, attention_dropout_rate, pos_enc)
        self.decoder = nn.Linear(att_unit, vocab_size)

    def logits(self, inputs: Tensor) -> Tensor:
        """inputs (B, L) -> (B, L, V), each position seeing itself and earlier ones."""
        x = self.encoder.stem(self.embed(inputs))
        causal = torch.ones(inputs.shape[1], inputs.shape[1], dtype=torch.bool, device=inputs.device).tril()
        for block in self.encoder.encoders:
            x = block(x, None, causal.unsqueeze(0))
        return self.decoder(self.encoder.after_norm(x))

    def init_state(self, n: int, device: torch.device | str | None = None) -> TransformerState:
        attn = self.encoder.encoders[0].self_attn
        empty = torch.zeros(n, attn.h, 0, attn.d_k, device=device, dtype=self.decoder.weight.dtype)
        blocks = len(self.encoder.encoders)
        return TransformerState([empty] * blocks, [empty] * blocks)

    def step(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, TransformerState]:
        """tokens (N,) -> next-token log-probabilities (N, V) and the state including them.
        Keys/values are cached per block (ESPnet caches block outputs and recomputes them)."""
        position = state.keys[0].shape[2]
        x = self.encoder.stem(self.embed(tokens.unsqueeze(1)), offset=position)  # (N, 1, D)
        keys, values = [], []
        for block, k_seen, v_seen in zip(self.encoder.encoders, state.keys, state.values):
            q, k, v = block.self_attn.project(block.norm1(x))
            k, v = torch.cat([k_seen, k], dim=2), torch.cat([v_seen, v], dim=2)
            x = x + block.dropout(block.self_attn.attend((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), v, None))
            x = x + block.dropout(block.feed_forward(block.norm2(x)))
            keys.append(k)
            values.append(v)
        log_probs = self.decoder(self.encoder.after_norm(x[:, 0])).float().log_softmax(dim=-1)
        return log_probs, TransformerState(keys, values)

    @staticmethod
    def select_state(state: TransformerState, index: Tensor) -> TransformerState:
        return TransformerState([k.index_select(0, index) for k in state.keys],
                                [v.index_select(0, index) for v in state.values])


RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}


class LSTMLM(LanguageModel):
    """ESPnet's SequentialRNNLM: Embedding(V, unit) -> dropout -> `nlayers` LSTM (or GRU /
    Elman RNN: `rnn_type`) of `nhid` units -> dropout -> Linear(V), optionally tied.
    Arguments, defaults and parameter names are ESPnet's."""

    def __init__(
        self,
        vocab_size: int,
        special_ids: dict[str, int] | None = None,
        unit: int = 650,
        nhid: int | None = None,
        nlayers: int = 2,
        dropout_rate: float = 0.0,
        tie_weights: bool = False,
        rnn_type: str = "lstm",
        ignore_id: int = 0,
        frontend: Any = None,
        specaug: Any = None,
        normalize: Any = None,
    ):
        _no_audio_parts("LSTMLM", frontend=frontend, specaug=specaug, normalize=normalize)
        super().__init__(vocab_size, special_ids)
        nhid = unit if nhid is None else nhid
        kind = rnn_type.lower()
        if kind not in RNN_TYPES:
            raise ValueError(f"rnn_type {rnn_type!r}: one of {sorted(RNN_TYPES)}")
        extra = {"nonlinearity": kind.split("_")[1]} if kind.startswith("rnn_") else {}
        self.drop = nn.Dropout(dropout_rate)
        self.encoder = nn.Embedding(vocab_size, unit, padding_idx=ignore_id)
        self.rnn = RNN_TYPES[kind](unit, nhid, nlayers, dropout=dropout_rate, batch_first=True, **extra)
        self.decoder = nn.Linear(nhid, vocab_size)
        if tie_weights:
            if nhid != unit:
                raise ValueError(f"tie_weights needs nhid == unit (got {nhid} and {unit})")
            self.decoder.weight = self.encoder.weight
        self.is_lstm = kind == "lstm"

    def logits(self, inputs: Tensor) -> Tensor:
        """inputs (B, L) -> (B, L, V); padding sits after each row's tokens, so it changes nothing before."""
        output, _ = self.rnn(self.drop(self.encoder(inputs)))
        return self.decoder(self.drop(output))

    def init_state(self, n: int, device: torch.device | str | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Zeros: (num_layers, N, nhid), a pair (h, c) for an LSTM."""
        zeros = torch.zeros(self.rnn.num_layers, n, self.rnn.hidden_size, device=device,
                            dtype=self.decoder.weight.dtype)
        return (zeros, zeros.clone()) if self.is_lstm else zeros

    def step(self, tokens: Tensor, state: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Any]:
        output, state = self.rnn(self.drop(self.encoder(tokens.unsqueeze(1))), state)
        return self.decoder(self.drop(output[:, 0])).float().log_softmax(dim=-1), state

    @staticmethod
    def select_state(state: Tensor | tuple[Tensor, Tensor], index: Tensor) -> Any:
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index) for s in state)
        return state.index_select(1, index)


def load_language_model(path: str | Path) -> tuple[LanguageModel, dict | None]:
    """(the LM in eval mode, its tokenizer's dict or None) from a speechlm LM checkpoint
    (`exp/lm/model.avg.ckpt`, `checkpoints/*.ckpt`) or an ESPnet LM `.pth` with its
    `config.yaml` beside it (or one directory up, as ESPnet's exp dirs have it)."""
    path = Path(path)
    if path.suffix == ".pth":
        from speechlm.interop.espnet_lm import load_espnet_lm

        model, tokenizer = load_espnet_lm(path)
    else:
        from speechlm.train.pretrained import load_pretrained

        model, loaded_tokenizer, _ = load_pretrained(path)
        tokenizer = loaded_tokenizer.to_dict() if loaded_tokenizer is not None else None
    if not isinstance(model, LanguageModel):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a language model (TransformerLM / LSTMLM)")
    return model.eval(), tokenizer


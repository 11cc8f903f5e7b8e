"""wav2vec 2.0 (Baevski et al. 2020) and HuBERT (Hsu et al. 2021): the waveform CNN and
the Transformer context network, numerically fairseq's / Hugging Face's / torchaudio's.

    audio (B, T) -> ConvFeatureEncoder: [Conv1d -> (norm) -> GELU] x 7   (20 ms frames, C 512)
                 -> LayerNorm(C)                           = the frontend's output (quantizer input)
    Wav2Vec2Encoder.stem:   Linear C -> D, dropout         (a pretraining model masks here)
    Wav2Vec2Encoder.blocks: x + GELU(weight-normed grouped Conv1d over time)
                 -> [LayerNorm, dropout] (post-LN models) -> Transformer blocks -> [LayerNorm] (pre-LN)

BASE models (layer_norm_first=False) use post-LN blocks, x = LN(x + MHSA(x)),
x = LN(x + FFN(x)), with a LayerNorm before the first block; LARGE models ("stable layer
norm", layer_norm_first=True) use pre-LN blocks and a LayerNorm after the last.

Padding: padded frames are zeroed before the positional convolution and masked as
attention keys, so a row's real frames do not depend on the others in its batch. The
CNN's GroupNorm (norm="group", BASE) normalises each channel over a row's own frames
(fairseq, HF and torchaudio normalise over the padding too: there a padded batch differs
from its rows encoded one by one).

Parameter names (HF -> ours; `speechlm.interop.hf_wav2vec2` converts):
feature_extractor.conv_layers.N.{conv,layer_norm} -> frontend.conv_layers.N.{conv,norm},
feature_projection.layer_norm -> frontend.layer_norm, feature_projection.projection ->
encoder.embed, encoder.pos_conv_embed.conv -> encoder.pos_conv.conv, encoder.layer_norm ->
encoder.before_norm (post-LN) | encoder.after_norm (pre-LN), encoder.layers.N ->
encoder.encoders.N: attention.{q,k,v}_proj -> self_attn.qkv (fused, rows q, k, v),
attention.out_proj -> self_attn.linear_out, layer_norm -> norm1, final_layer_norm -> norm2,
feed_forward.{intermediate,output}_dense -> feed_forward.w_1 / w_2.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechlm.encoders.base import Encoder, EncoderOutput, StemOutput
from speechlm.encoders.transformer import TransformerBlock
from speechlm.nn.attention import MultiHeadAttention
from speechlm.nn.dropout import Dropout
from speechlm.nn.feed_forward import FeedForward
from speechlm.nn.masks import valid_mask

# fairseq's conv_feature_layers: 400-sample receptive field, 320-sample (20 ms) hop
DEFAULT_CONV_LAYERS = [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2


def conv_output_lengths(lengths: Tensor, conv_layers: Sequence[Sequence[int]]) -> Tensor:
    """(B,) samples -> (B,) frames: floor((L - kernel) / stride) + 1 per layer, at least 0."""
    for _, kernel, stride in conv_layers:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


class GradMultiply(torch.autograd.Function):
    """Identity forward; the gradient times `scale` backward (fairseq's feature_grad_mult)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def channel_norm_over_frames(x: Tensor, lengths: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm(C, C) of (B, C, T) with each row's statistics over its first `lengths`
    frames only (float32 statistics, as autocast runs group_norm)."""
    keep = valid_mask(lengths, x.shape[2]).unsqueeze(1)  # (B, 1, T)
    xf = x.float()
    n = lengths.clamp(min=1).to(xf.dtype)[:, None, None]
    mean = xf.masked_fill(~keep, 0.0).sum(-1, keepdim=True) / n
    var = (xf - mean).square().masked_fill(~keep, 0.0).sum(-1, keepdim=True) / n
    y = (xf - mean) * torch.rsqrt(var + norm.eps)
    return (y * norm.weight.float()[:, None] + norm.bias.float()[:, None]).to(x.dtype)


class ConvBlock(nn.Module):
    """Conv1d -> norm ("group": GroupNorm(C, C), "layer": LayerNorm over C, None) -> GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool, norm: str | None):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm_type = norm
        if norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels)
        else:
            self.norm = None

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C_in, T), (B,) -> (B, C_out, T'), (B,)."""
        x = self.conv(x)
        lengths = (torch.div(lengths - self.kernel, self.stride, rounding_mode="floor") + 1).clamp(min=0)
        if self.norm_type == "layer":
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.norm_type == "group":
            padded = bool((lengths < x.shape[2]).any())
            x = channel_norm_over_frames(x, lengths, self.norm) if padded else self.norm(x)
        return F.gelu(x), lengths


class ConvFeatureEncoder(nn.Module):
    """The waveform CNN as a frontend: audio (B, T), lengths (B,) -> (B, T', C), (B,).

    conv_layers: [dim, kernel, stride] per layer (default fairseq's, 20 ms frames at 16 kHz).
    norm: "group" (fairseq's extractor_mode "default", HF's feat_extract_norm "group":
    GroupNorm on the first layer only) or "layer" ("layer_norm": LayerNorm after every conv).
    final_norm: the LayerNorm over C after the CNN (HF's feature_projection.layer_norm).
    grad_mult: the gradient into the CNN is scaled by it (fairseq's feature_grad_mult; 0
    runs the CNN without gradient); the forward pass is unchanged.
    """

    def __init__(self, conv_layers: Sequence[Sequence[int]] | None = None, norm: str = "group",
                 conv_bias: bool = False, final_norm: bool = True, grad_mult: float = 1.0,
                 sample_rate: int = 16000):
        super().__init__()
        if norm not in ("group", "layer"):
            raise ValueError(f"unknown norm {norm!r} (group, layer)")
        self.conv_config = [[int(d), int(k), int(s)] for d, k, s in (conv_layers or DEFAULT_CONV_LAYERS)]
        self.sample_rate = sample_rate
        self.grad_mult = float(grad_mult)
        self.norm_type = norm
        blocks, in_channels = [], 1
        for i, (dim, kernel, stride) in enumerate(self.conv_config):
            layer_norm = norm if norm == "layer" or i == 0 else None
            blocks.append(ConvBlock(in_channels, dim, kernel, stride, conv_bias, layer_norm))
            in_channels = dim
        self.conv_layers = nn.ModuleList(blocks)
        self.layer_norm = nn.LayerNorm(in_channels) if final_norm else None

    def output_size(self) -> int:
        return self.conv_config[-1][0]

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return conv_output_lengths(lengths, self.conv_config)

    def extract(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """audio (B, T) -> (raw CNN features (B, T', C) before the final norm, lengths (B,)):
        what fairseq's feature penalty (mean of squares) is taken over."""
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], device=audio.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.grad_mult != 0):
            x = audio.unsqueeze(1)
            for block in self.conv_layers:
                x, lengths = block(x, lengths)
        x = x.transpose(1, 2)
        if self.grad_mult not in (0.0, 1.0) and x.requires_grad:
            x = GradMultiply.apply(x, self.grad_mult)
        return x, lengths

    def forward(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """audio (B, T), lengths (B,) -> features (B, T', C), lengths (B,)."""
        x, lengths = self.extract(audio, lengths)
        return (x if self.layer_norm is None else self.layer_norm(x)), lengths


class ConvPositionalEmbedding(nn.Module):
    """GELU(grouped Conv1d over time), weight norm over dim 2 (one g per kernel tap), as
    fairseq's pos_conv: "same" padding, the last frame dropped for an even kernel."""

    def __init__(self, size: int, kernel: int = 128, groups: int = 16):
        super().__init__()
        conv = nn.Conv1d(size, size, kernel, padding=kernel // 2, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=2 * math.sqrt(1 / (kernel * size)))
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 - kernel % 2

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)"""
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, :-self.trim]
        return F.gelu(y).transpose(1, 2)


class Wav2Vec2Block(TransformerBlock):
    """`TransformerBlock` (post-LN or pre-LN, dropout on both residual branches) with
    torch's LayerNorm eps 1e-5 (fairseq's and HF's), not ESPnet's 1e-12."""

    def __init__(self, size: int, self_attn: nn.Module, feed_forward: nn.Module, dropout_rate: float,
                 layer_norm_first: bool):
        super().__init__(size, self_attn, feed_forward, dropout_rate, normalize_before=layer_norm_first)
        self.norm1, self.norm2 = nn.LayerNorm(size), nn.LayerNorm(size)


def bert_init(module: nn.Module) -> None:
    """fairseq's init_bert_params for the Transformer: Linear and Embedding N(0, 0.02), zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class Wav2Vec2Encoder(Encoder):
    """The context network over CNN features (B, T, input_size). Defaults: BASE (768, 12
    heads, 3072, 12 blocks, post-LN) with fairseq's pretraining dropouts. dropout_rate:
    fairseq's dropout (HF hidden_dropout); input_dropout_rate: after the projection
    (dropout_input, HF feat_proj_dropout); activation_dropout_rate: inside the FFN.

    `blocks(..., return_layers)`: layer i's output as HF's hidden_states[i], 0 the first
    block's input; for pre-LN models the last layer's is after the final LayerNorm (= the
    output, as transformers 4.x and torchaudio; transformers 5.x returns it before)."""

    attention_class: type[nn.Module] = MultiHeadAttention
    norm_intermediate = False

    def __init__(self, input_size: int = 512, output_size: int = 768, attention_heads: int = 12,
                 linear_units: int = 3072, num_blocks: int = 12, dropout_rate: float = 0.1,
                 attention_dropout_rate: float = 0.1, activation_dropout_rate: float = 0.0,
                 input_dropout_rate: float = 0.1, layer_norm_first: bool = False, conv_pos: int = 128,
                 conv_pos_groups: int = 16, layer_drop_rate: float = 0.05):
        super().__init__()
        self._output_size = output_size
        self.input_size, self.attention_heads, self.linear_units = input_size, attention_heads, linear_units
        self.dropout_rate, self.attention_dropout_rate = dropout_rate, attention_dropout_rate
        self.activation_dropout_rate, self.input_dropout_rate = activation_dropout_rate, input_dropout_rate
        self.layer_norm_first, self.conv_pos, self.conv_pos_groups = layer_norm_first, conv_pos, conv_pos_groups
        self.layer_drop_rate = layer_drop_rate
        self.embed = nn.Linear(input_size, output_size)
        self.input_dropout = Dropout(input_dropout_rate)
        self.pos_conv = ConvPositionalEmbedding(output_size, conv_pos, conv_pos_groups)
        self.before_norm = None if layer_norm_first else nn.LayerNorm(output_size)
        self.dropout = Dropout(dropout_rate)
        self.encoders = nn.ModuleList(
            Wav2Vec2Block(
                output_size,
                self.attention_class(attention_heads, output_size, attention_dropout_rate),
                FeedForward(output_size, linear_units, activation_dropout_rate, nn.GELU()),
                dropout_rate, layer_norm_first,
            )
            for _ in range(num_blocks)
        )
        self.after_norm = nn.LayerNorm(output_size) if layer_norm_first else None
        self.encoders.apply(bert_init)

    def stem(self, xs: Tensor, lengths: Tensor) -> StemOutput:
        """CNN features (B, T, C), lengths (B,) -> StemOutput(projected (B, T, D), lengths, None):
        the frames a pretraining model masks."""
        return StemOutput(self.input_dropout(self.embed(xs)), lengths, None)

    def position_bias(self, x: Tensor) -> Tensor | None:
        """What the blocks get as `pos_emb` (None: the convolution carries the positions)."""
        return None

    def blocks(self, stem: StemOutput, return_layers: Sequence[int] = (),
               condition: Callable[[Tensor], Tensor] | None = None) -> EncoderOutput:
        """Positional convolution, the blocks and the final norm -> EncoderOutput;
        `return_layers` (1-based; 0: the first block's input) and `condition` as `Encoder.blocks`."""
        x, lengths, _ = stem
        x = x.masked_fill(~valid_mask(lengths, x.shape[1]).unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x)
        if self.before_norm is not None:
            x = self.before_norm(x)
        x = self.dropout(x)
        out = super().blocks(StemOutput(x, lengths, self.position_bias(x)), return_layers, condition)
        if 0 in return_layers:  # the first block's input, HF's hidden_states[0]
            out.intermediate[0] = x
        last = len(self.encoders)
        if self.after_norm is not None and last in out.intermediate:
            out.intermediate[last] = out.output
        return out

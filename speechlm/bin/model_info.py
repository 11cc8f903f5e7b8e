"""Build the configured model and print what it costs: parameters per module, the total, and
forward FLOPs per second of 16 kHz audio.

    python -m speechlm.bin.model_info                      # conf/model_info.yaml: Conformer 12x256
    python -m speechlm.bin.model_info encoder=conformer_m
    python -m speechlm.bin.model_info encoder=e_branchformer encoder.num_blocks=6
    python -m speechlm.bin.model_info experiment=conformer_transducer_s   # the whole model

Arguments are Hydra overrides of conf/model_info.yaml. FLOPs are counted, not estimated:
torch's FlopCounterMode records every matmul, convolution and attention kernel of one
forward pass over a 10 s utterance (80-dim features at 100 frames/s, eval mode); elementwise
work (norms, activations, softmax) is not counted, as is usual for FLOPs.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
PRIMARY_CONFIG = "model_info"
FRAMES_PER_SECOND = 100  # 10 ms hop, ESPnet's and Kaldi's fbank default
SECONDS = 10.0


def compose_config(overrides: Sequence[str] = (), config_dir: Path = CONF_DIR):
    """conf/model_info.yaml with Hydra `overrides` applied (no Hydra run dir, no logging)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(PRIMARY_CONFIG, overrides=list(overrides))


def build_model(cfg) -> nn.Module:
    """The whole model when a `model` group is chosen (`model=transducer`, or a preset that
    picks one), else the bare encoder."""
    from speechlm.models.build import build_model as instantiate_model

    return instantiate_model(cfg.model if cfg.get("model") is not None else cfg.encoder, initialize=False)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_table(model: nn.Module) -> str:
    """Top-level children and the children below them: parameter count and share of the
    total. Modules without parameters (dropouts, positional tables) are left out."""
    total = num_params(model)
    rows = []
    for name, child in model.named_children():
        rows.append((name, num_params(child)))
        rows += [(f"  {name}.{sub}", num_params(grandchild)) for sub, grandchild in child.named_children()]
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        rows.append(("(own parameters)", own))
    rows = [(name, n) for name, n in rows if n]
    width = max([len("module")] + [len(name) for name, _ in rows])
    lines = [f"{'module':<{width}}  {'params':>13}  {'share':>6}"]
    lines += [f"{name:<{width}}  {n:>13,}  {100 * n / max(total, 1):>5.1f}%" for name, n in rows]
    return "\n".join(lines)


# torch's convolution_backward formula counts a grouped conv's weight gradient as if the conv
# were dense: `groups` times too much, 256x for a depthwise conv at d=256, which would make
# the conv modules of Conformer / E-Branchformer dominate a training step's count. Each
# gradient (input, weight) costs exactly what the forward conv costs.
def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                         transposed, _output_padding, _groups, output_mask, out_shape=None) -> int:
    spatial = (x_shape if transposed else grad_out_shape)[2:]
    forward = 2 * x_shape[0] * math.prod(w_shape) * math.prod(spatial)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


# torch's counter knows SDPA's CUDA kernels but not its CPU flash kernel, which our attention
# runs in eval mode on a CPU (speechlm.nn.attention): the same formulas as torch's SDPA ones.
def _cpu_flash_attention_flops(q_shape, k_shape, v_shape, *_args, out_shape=None, **_kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _cpu_flash_attention_backward_flops(grad_out_shape, q_shape, k_shape, v_shape, *_args, out_shape=None,
                                        **_kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, q_shape, k_shape, v_shape)


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that counts grouped convolutions' backward correctly and SDPA's CPU
    kernel (our attention's other paths are plain matmuls, which it counts)."""
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten.convolution_backward: _conv_backward_flops,
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops,
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_attention_backward_flops,
    })


def forward_flops(model: nn.Module, input_size: int, seconds: float = SECONDS, whole_model: bool = False) -> int:
    """FLOPs of one eval-mode forward pass over a (1, seconds x 100, input_size) utterance
    through an encoder: the module itself, or with `whole_model` the model's `encode`
    (`speechlm.models.protocol`; model_info builds models without a frontend, so it reads
    features)."""
    frames = int(round(seconds * FRAMES_PER_SECOND))
    xs, lengths = torch.randn(1, frames, input_size), torch.tensor([frames])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), flop_counter() as counter:
            (model.encode if whole_model else model)(xs, lengths)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    cfg = compose_config(argv)
    model = build_model(cfg)
    print(f"model: {type(model).__module__}.{type(model).__qualname__}")
    print(parameter_table(model))
    print(f"total params: {num_params(model)}")
    flops = forward_flops(model, int(cfg.input_size), whole_model=cfg.get("model") is not None)
    print(f"encoder forward FLOPs on {SECONDS:g} s ({int(SECONDS * FRAMES_PER_SECOND)} frames x "
          f"{cfg.input_size}): {flops / 1e9:.3f} G")
    print(f"GFLOPs per second of audio: {flops / SECONDS / 1e9:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lightning strategies for the trainer presets (conf/trainer/{gpu,fsdp,multinode}.yaml),
built from config: `trainer.strategy: {_target_: speechlm.train.strategies.ddp, ...}`.

Why functions rather than Lightning's strategy names ("ddp", "fsdp"): a name cannot carry
the process-group timeout (a rank that dies under torchrun/SLURM would otherwise leave its
peers waiting 30 minutes in an all-reduce) nor FSDP's wrapping and activation-checkpointing
policies, which are sets of module *classes* that YAML can only name as strings.

The cluster itself (ranks, world size, master address) is Lightning's business: it reads
torchrun's (`TorchElasticEnvironment`) and SLURM's (`SLURMEnvironment`) variables, so a
preset only says how many nodes and devices there are.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import timedelta

from torch import nn
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

# The blocks a speechlm model repeats: FSDP shards (and, with activation checkpointing,
# recomputes) per block. Every encoder/decoder block class of the package is here.
DEFAULT_BLOCKS = (
    "speechlm.encoders.conformer.ConformerBlock",
    "speechlm.encoders.e_branchformer.EBranchformerBlock",
    "speechlm.encoders.transformer.TransformerBlock",
    "speechlm.encoders.whisper.WhisperEncoderBlock",
    "speechlm.decoders.transformer.TransformerDecoderBlock",
    "speechlm.decoders.multitask.MultitaskDecoderBlock",
)


def module_classes(names: Sequence[str]) -> set[type[nn.Module]]:
    """The nn.Module classes named `package.module.Class` (only classes of speechlm or torch:
    a trainer config names code, but nothing outside these)."""
    classes = set()
    for name in names:
        module, _, attr = str(name).rpartition(".")
        if not module or module.split(".")[0] not in ("speechlm", "torch"):
            raise ValueError(f"block class {name!r}: expected speechlm.<module>.<Class> or torch.<module>.<Class>")
        cls = getattr(importlib.import_module(module), attr, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"block class {name!r} is not an nn.Module class")
        classes.add(cls)
    return classes


def ddp(timeout_minutes: float = 30.0, find_unused_parameters: bool = False, static_graph: bool = False,
        gradient_as_bucket_view: bool = True, process_group_backend: str | None = None) -> DDPStrategy:
    """Data-parallel training (NCCL on GPUs, gloo on CPUs unless `process_group_backend`).
    `timeout_minutes` bounds how long ranks wait for a peer in a collective before failing:
    what ends a run whose rank crashed when no launcher kills the others."""
    return DDPStrategy(timeout=timedelta(minutes=timeout_minutes), find_unused_parameters=find_unused_parameters,
                       static_graph=static_graph, gradient_as_bucket_view=gradient_as_bucket_view,
                       process_group_backend=process_group_backend)


def fsdp(blocks: Sequence[str] = DEFAULT_BLOCKS, activation_checkpointing: bool = True,
         sharding_strategy: str = "FULL_SHARD", state_dict_type: str = "full", cpu_offload: bool = False,
         timeout_minutes: float = 30.0, process_group_backend: str | None = None) -> FSDPStrategy:
    """Fully sharded data parallel: parameters, gradients and optimizer state sharded over
    ranks per block (`blocks`, each its own FSDP unit), blocks' activations recomputed in
    backward when `activation_checkpointing` (memory for compute, ~1.3x step time).
    `state_dict_type: full` gathers an ordinary checkpoint on rank 0, so averaging, decoding
    and resuming on any number of devices work as for DDP. Needs GPUs (Lightning's FSDP
    refuses the CPU accelerator)."""
    classes = module_classes(blocks)
    return FSDPStrategy(auto_wrap_policy=classes, activation_checkpointing_policy=classes if activation_checkpointing else None,
                        sharding_strategy=sharding_strategy, state_dict_type=state_dict_type, cpu_offload=cpu_offload,
                        timeout=timedelta(minutes=timeout_minutes), process_group_backend=process_group_backend)

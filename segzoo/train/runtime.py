"""Where a run executes: the device, mixed precision, and the distributed process group (torchrun)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core.errors import SegzooError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None  # None: full float32
    channels_last: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for float16, whose small range needs loss scaling; bfloat16 and float32 do not."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for bf16/fp16 (weights stay fp32); nothing for fp32 or None."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when present, else CPU; ``cuda`` without CUDA is an error that says so."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SegzooError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu (or auto)")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name != "cpu":
        raise SegzooError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def setup(device: str = "auto", amp: bool | None = None) -> Runtime:
    """Pick the device, join the process group when torchrun started us (``WORLD_SIZE`` > 1).

    AMP (on by default on CUDA): bfloat16 where the GPU supports it, else float16 with a grad scaler.
    nccl on CUDA, gloo on CPU; each rank drives ``cuda:LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    use_amp = dev.type == "cuda" if amp is None else amp
    amp_dtype = None
    if use_amp:
        if dev.type != "cuda":
            amp_dtype = torch.bfloat16  # CPU autocast supports bfloat16 only
        else:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(dev, rank, world_size, amp_dtype, channels_last=dev.type == "cuda")


def all_reduce_sum(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Sum over ranks in place (a no-op in one process); gloo needs CPU tensors, nccl CUDA ones."""
    if rt.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


def teardown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sync_batchnorm(model: torch.nn.Module) -> int:
    """Turn every BatchNorm of ``model`` into a SyncBatchNorm in place (same parameters); returns how many.

    The root module is kept (a SegmentationModel stays one, with its recipe); only its children are replaced.
    """
    count = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for name, child in list(model.named_children()):
        setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return count

"""Where a run executes: the device, mixed precision, and the distributed process group (torchrun)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core.errors import SegzooError
from ..core.hardware import matmul_speedup

# bf16 training on a CPU pays only where the bf16 matmul peak is at least this many times fp32's: a training step
# also runs memory-bound work (casts, optimiser, activations) that bf16 speeds up far less than the products.
BF16_PAYS = 2.0
# What --amp accepts besides on/off: train in bf16 on a CPU even where it does not pay (for experiments).
AMP_FORCE = "force"


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


@functools.cache
def bf16_matmul_speedup(device_type: str = "cpu") -> float:
    """This machine's bf16 matmul peak over its fp32 one, measured once per process (about a second) and cached."""
    return matmul_speedup(torch.bfloat16, device_type)


def cpu_amp(amp: bool | str | None, log: Callable[[str], None] = print,
            speedup: Callable[[], float] | None = None) -> torch.dtype | None:
    """The dtype a CPU run trains in for ``--amp`` (``amp``): bfloat16 only where it pays, or when forced.

    ``True`` measures :func:`bf16_matmul_speedup` (or calls ``speedup``); below :data:`BF16_PAYS` it says so in one
    line (with the measured ratio) and the run trains in fp32. ``"force"`` trains in bf16 whatever the ratio;
    ``None``/``False`` in fp32.
    """
    if amp == AMP_FORCE:
        return torch.bfloat16
    if not amp:
        return None
    ratio = speedup() if speedup is not None else bf16_matmul_speedup("cpu")
    if ratio < BF16_PAYS:
        log(f"--amp: this CPU's bf16 matmul peak is {ratio:.2f}x its fp32 one (measured now; bf16 training pays from "
            f"{BF16_PAYS:g}x, with AMX or AVX-512 BF16): training in fp32 (--amp force trains in bf16 anyway)")
        return None
    log(f"--amp: this CPU's bf16 matmul peak is {ratio:.2f}x its fp32 one (measured now): training in bf16, "
        "channels-last, fc6/fc7 as bf16 GEMMs")
    return torch.bfloat16


def check_amp(amp: object) -> None:
    """A :class:`SegzooError` for an ``amp`` setting that is neither on/off/unset nor ``"force"``."""
    if amp is not None and not isinstance(amp, bool) and amp != AMP_FORCE:
        raise SegzooError(f"--amp takes no value, or '{AMP_FORCE}' (bf16 on a CPU even where it does not pay); "
                          f"got {amp!r}")


def setup(device: str = "auto", amp: bool | str | None = None, log: Callable[[str], None] = print) -> Runtime:
    """Pick the device, join the process group when torchrun started us (``WORLD_SIZE`` > 1).

    AMP (on by default on CUDA): bfloat16 where the GPU supports it, else float16 with a grad scaler. On a CPU
    (off by default) bfloat16 where it pays (:func:`cpu_amp`, which also says what it decided; rank 0 only), in
    channels-last, the layout oneDNN's bf16 kernels take. nccl on CUDA, gloo on CPU; each rank drives
    ``cuda:LOCAL_RANK``.
    """
    check_amp(amp)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    if dev.type == "cpu":
        speedup = _rank0_speedup if world_size > 1 else None
        amp_dtype = cpu_amp(amp, log if rank == 0 else (lambda _: None), speedup)
        return Runtime(dev, rank, world_size, amp_dtype, channels_last=amp_dtype is not None)
    amp_dtype = None
    if amp is None or amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(dev, rank, world_size, amp_dtype, channels_last=True)


def compile_payback_steps(compile_s: float, eager_step_s: float, compiled_step_s: float) -> float:
    """Steps after which ``torch.compile`` has paid for itself: its compile time over what each compiled step saves
    (``inf`` when a compiled step is no faster)."""
    saved = eager_step_s - compiled_step_s
    return compile_s / saved if saved > 0 else float("inf")


def compile_pays(compile_s: float, eager_step_s: float, compiled_step_s: float, steps_per_epoch: int) -> bool:
    """Whether compiling pays back within the run's first epoch, the rule for using it by default."""
    return compile_payback_steps(compile_s, eager_step_s, compiled_step_s) <= steps_per_epoch


def _rank0_speedup() -> float:
    """Rank 0's measured bf16 speed-up, given to every rank, so that all of them decide alike."""
    ratio = torch.tensor([bf16_matmul_speedup("cpu") if dist.get_rank() == 0 else 0.0], dtype=torch.float64)
    dist.broadcast(ratio, src=0)
    return float(ratio.item())


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

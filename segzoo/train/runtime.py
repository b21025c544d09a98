"""Where a run executes: the device, mixed precision, and the distributed process group.

One function, :func:`placement`, decides which process of how many this one is, whoever started it: an
existing process group (Ray Train, Lightning Fabric, a user's own ``init_process_group``), torchrun
(``RANK``/``WORLD_SIZE``), Lightning Fabric's launcher (``LOCAL_RANK``/``WORLD_SIZE``, no ``RANK``) or SLURM's
``srun`` (``SLURM_PROCID``/``SLURM_NTASKS``), so ``srun python -m segzoo train`` is one distributed job, not N.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core.errors import SegzooError
from ..core.hardware import keep_freed_memory, matmul_speedup

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


@dataclass(frozen=True)
class Placement:
    """Which process of the job this is, and where its processes meet (None: the environment's own, or none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    source: str = "single process"  # what decided it, for messages
    master_addr: str | None = None  # set for SLURM, whose environment has no MASTER_ADDR
    master_port: int | None = None


def placement(env: Mapping[str, str] | None = None, group: bool | None = None) -> Placement:
    """This process's rank, world size and local rank, from the first that says so:

    1. an initialised ``torch.distributed`` process group (``get_rank``/``get_world_size``);
    2. ``RANK`` and ``WORLD_SIZE`` (torchrun, or set by hand);
    3. ``LOCAL_RANK`` and ``WORLD_SIZE`` without ``RANK`` (Lightning Fabric): the rank is
       ``NODE_RANK * LOCAL_WORLD_SIZE + LOCAL_RANK`` (one node: ``LOCAL_RANK``);
    4. SLURM under ``srun`` (``SLURM_STEP_ID`` set; a batch script's own shell has no step and is one process):
       ``SLURM_PROCID`` of ``SLURM_STEP_NUM_TASKS`` (else ``SLURM_NTASKS``), ``SLURM_LOCALID``; the first host of
       ``SLURM_STEP_NODELIST``/``SLURM_JOB_NODELIST``/``SLURM_NODELIST`` as the master unless ``MASTER_ADDR`` is
       set, and ``MASTER_PORT`` or a port derived from ``SLURM_JOB_ID``;
    5. else one process.

    ``env`` defaults to ``os.environ``; ``group`` (whether a process group is initialised) to asking torch.
    """
    env = os.environ if env is None else env
    if group is None:
        group = dist.is_available() and dist.is_initialized()
    local = _int(env, "LOCAL_RANK", 0)
    if group:
        return Placement(dist.get_rank(), dist.get_world_size(), local, "the initialised process group")
    if "RANK" in env and "WORLD_SIZE" in env:
        return _checked(Placement(_int(env, "RANK"), _int(env, "WORLD_SIZE"), local, "RANK/WORLD_SIZE"))
    if "LOCAL_RANK" in env and "WORLD_SIZE" in env:
        node = _int(env, "NODE_RANK", 0) or _int(env, "GROUP_RANK", 0)
        if node and "LOCAL_WORLD_SIZE" not in env:
            raise SegzooError(f"NODE_RANK is {node} but neither RANK nor LOCAL_WORLD_SIZE is set, so this process's "
                              "rank is unknown; set RANK (torchrun does) or LOCAL_WORLD_SIZE")
        rank = node * _int(env, "LOCAL_WORLD_SIZE", 1) + local
        return _checked(Placement(rank, _int(env, "WORLD_SIZE"), local, "LOCAL_RANK/WORLD_SIZE"))
    if "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        world = _int(env, "SLURM_STEP_NUM_TASKS", 0) or _int(env, "SLURM_NTASKS", 1)
        nodes = next((env[k] for k in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST") if env.get(k)),
                     "")
        addr = env.get("MASTER_ADDR") or (expand_nodelist(nodes)[0] if nodes else "127.0.0.1")
        port = _int(env, "MASTER_PORT", 0) or slurm_port(env.get("SLURM_JOB_ID", ""))
        return _checked(Placement(_int(env, "SLURM_PROCID"), world, _int(env, "SLURM_LOCALID", 0), "SLURM (srun)",
                                  addr, port))
    return Placement()


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = env.get(name)
    if text is None or (not text.strip() and default is not None):
        if default is None:
            raise SegzooError(f"{name} is not set")
        return default
    try:
        return int(text)
    except ValueError:
        raise SegzooError(f"the environment variable {name}={text!r} is not a whole number; a launcher (torchrun, "
                          "srun) sets it: unset it or fix it") from None


def _checked(p: Placement) -> Placement:
    if p.world_size < 1 or not 0 <= p.rank < p.world_size or p.local_rank < 0:
        raise SegzooError(f"{p.source} says rank {p.rank} of {p.world_size} (local rank {p.local_rank}): the rank "
                          "must be from 0 to the world size - 1; check the launcher's environment variables")
    return p


def slurm_port(job_id: str) -> int:
    """A port every task of one SLURM job agrees on without talking: 15000 + the job id's last four digits."""
    digits = re.sub(r"\D", "", job_id)[-4:]
    return 15000 + int(digits) if digits else 29500


def expand_nodelist(text: str) -> list[str]:
    """SLURM's compressed host list as host names: ``node[01-03,07],gpu5`` -> node01, node02, node03, node07, gpu5.

    Ranges keep their zero padding; several bracket groups in one name (``r[1-2]n[1-2]``) expand as a product.
    """
    hosts: list[str] = []
    for item in _split_top(text.strip()):
        hosts.extend(_expand_host(item))
    if not hosts:
        raise SegzooError(f"cannot read the SLURM node list {text!r}; set MASTER_ADDR to the first node's address")
    return hosts


def _split_top(text: str) -> list[str]:
    """Split at the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_host(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if match is None:
        if "[" in item or "]" in item:
            raise SegzooError(f"cannot read the SLURM node list entry {item!r}; set MASTER_ADDR")
        return [item]
    head, tail = item[:match.start()], item[match.end():]
    out: list[str] = []
    for part in match.group(1).split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise SegzooError(f"cannot read the SLURM node list entry {item!r}; set MASTER_ADDR")
        for n in range(int(lo), int(hi or lo) + 1):
            out.extend(f"{head}{n:0{len(lo)}d}{rest}" for rest in _expand_host(tail) or [""])
    return out


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
    """Pick the device, join the process group when a launcher started several processes (see :func:`placement`).

    AMP (on by default on CUDA): bfloat16 where the GPU supports it, else float16 with a grad scaler. On a CPU
    (off by default) bfloat16 where it pays (:func:`cpu_amp`, which also says what it decided; rank 0 only), in
    channels-last, the layout oneDNN's bf16 kernels take; on a CPU freed memory is kept for reuse
    (:func:`segzoo.core.hardware.keep_freed_memory`). nccl on CUDA, gloo on CPU; each rank drives
    ``cuda:LOCAL_RANK``.
    """
    check_amp(amp)
    where = placement()
    rank, world_size, local_rank = where.rank, where.world_size, where.local_rank
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        if where.master_addr is not None:  # SLURM: say where to meet, as torchrun would have
            os.environ.setdefault("MASTER_ADDR", where.master_addr)
            os.environ.setdefault("MASTER_PORT", str(where.master_port))
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                init_method="env://")
    if dev.type == "cpu":
        keep_freed_memory()  # a step's buffers come back every step: without it, faulting them in again dominated
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

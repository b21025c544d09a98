"""Whether a tracer is recording this forward: the one test the model, its layers and the fast convs share.

A forward that branches on a tensor's size while a tracer records it bakes that comparison into the graph
as a guard, so the graph refuses every other size (``torch.export``'s "Guard failed"). Code with a size check
that only matters eagerly asks :func:`tracing` first and skips the check when it says yes.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """Whether ``torch.export``, ``torch.compile``, ``torch.jit.trace`` or the ONNX exporter is running this call."""
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export())


def exporting() -> bool:
    """Whether this call is being recorded into a graph that leaves Python (``torch.export``, ``torch.jit.trace``,
    ONNX): unlike :func:`tracing`, false under ``torch.compile``, which may keep eager-only fast paths."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


__all__ = ["exporting", "tracing"]

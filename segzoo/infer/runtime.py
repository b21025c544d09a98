"""What predicts: a torch model from a checkpoint, or an exported ``.onnx`` file run by onnxruntime.

Both look the same to :mod:`segzoo.infer.predict`: called on an N x C x H x W float tensor they return the
logits, and they say their ``normalization``, ``num_classes``, ``class_names``, ``in_chans``, ``min_input_size``
and ``align`` (the coarsest stride, where tiles start so a tile sees what the whole image would).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from ..core.batch import Window
from ..core.errors import CheckpointError, SegzooError
from ..core.window import shifted_window
from .export import check_metadata

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def runner(model: Any, device: torch.device | str = "cpu", dtype: str = "fp32",
           channels_last: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> float32 logits`` on ``device``, the way segzoo predicts, evaluates tiles and benchmarks inference.

    ``fp32`` calls the model as it is (its built-in speed-ups, :mod:`segzoo.core.accel`, apply). ``bf16`` and
    ``fp16`` run it on a copy of its weights in that type, made once per model (:func:`low_precision_weights`;
    the model itself keeps its float32 weights and is not changed), with the weights and the input in
    channels-last layout: oneDNN's bf16 kernels (AMX, AVX-512 BF16) and cuDNN's tensor cores work in NHWC.
    That is what makes low precision pay: ``torch.autocast`` in NCHW casts every weight again at each call
    and reorders every map (bench/RESULTS.md has both). The logits come back as float32, so the softmax after
    them is float32 too.
    """
    if dtype not in DTYPES:
        raise SegzooError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    low = DTYPES[dtype]
    if hasattr(model, "parameters"):
        model.eval().to(device)
    if low is torch.float32:
        def run32(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x.to(device))

        return run32
    if not isinstance(model, torch.nn.Module):
        raise SegzooError(f"--dtype {dtype} needs a torch checkpoint; an .onnx model runs in the precision it was "
                          "exported in")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    weights = low_precision_weights(model, low, layout)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = x.to(device, low).contiguous(memory_format=layout)
            return functional_call(model, weights, (x,)).float()

    return run


# model -> {(dtype, layout): (the weights' identity and versions, the copy)}; gone with the model
_COPIES: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[Any, Any], tuple[tuple[Any, ...], dict[str, Any]]]] = (
    weakref.WeakKeyDictionary())


def low_precision_weights(model: torch.nn.Module, dtype: torch.dtype,
                          layout: torch.memory_format = torch.channels_last) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers in ``dtype`` and ``layout``, for :func:`torch.func.functional_call`.

    Made once per model, type and layout, and kept while the model lives (predicting a folder image by image,
    or calling :func:`~segzoo.infer.predict.predict_image` again, reuses it: casting vgg16-fcn8s's 134M weights
    cost about 0.18 s per 500x500 image on a 2-core Xeon, 40% of a bf16 prediction); a weight that was
    replaced, moved or changed in place makes it anew.
    """
    tensors = list(chain(model.named_parameters(), model.named_buffers()))
    stamp = tuple((name, t.data_ptr(), t._version, t.device, t.dtype) for name, t in tensors)
    cached = _COPIES.setdefault(model, {}).get((dtype, layout))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    copy = {name: _cast(t, dtype, layout) for name, t in tensors}
    _COPIES[model][(dtype, layout)] = (stamp, copy)
    return copy


def _cast(t: torch.Tensor, dtype: torch.dtype, layout: torch.memory_format) -> torch.Tensor:
    """A floating tensor in ``dtype`` (a 4-D one in ``layout``); others (BatchNorm's counters) as they are."""
    if not t.is_floating_point():
        return t
    t = t.detach().to(dtype)
    return t.contiguous(memory_format=layout) if t.dim() == 4 else t


class OnnxModel:
    """An exported segzoo model run by onnxruntime on the CPU; all it needs is the file (its metadata says the rest)."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None):
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:
            raise SegzooError(f"running an .onnx model needs onnx and onnxruntime ({exc.name} is missing); install "
                              "them with: pip install 'segzoo[export]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{path} does not exist or is not a regular file; pass an .onnx file written by "
                                  "segzoo export")
        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
            raise CheckpointError(f"{path} is not a readable ONNX file ({type(exc).__name__}); export it again"
                                  ) from None
        meta = check_metadata({p.key: p.value for p in proto.metadata_props}, self.path)
        if "normalization" not in meta or "num_classes" not in meta:
            raise CheckpointError(f"{path} has no segzoo metadata (normalization, classes); export it with "
                                  "segzoo export, which embeds them")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's Fail, InvalidGraph, NotImplemented...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(f"onnxruntime cannot run {path} ({first}); export it again with segzoo export"
                                  ) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(self.session.get_outputs()) < 1:
            raise CheckpointError(f"{path}'s graph does not take one N x C x H x W image (it takes "
                                  f"{[i.shape for i in inputs]}); export it again with segzoo export")
        self.input_name = self.session.get_inputs()[0].name
        self.normalization: dict[str, Any] = dict(meta["normalization"])
        self.num_classes = int(meta["num_classes"])
        self.class_names = list(meta.get("class_names") or [f"class_{i}" for i in range(self.num_classes)])
        self.in_chans = int(meta.get("in_chans", 3))
        self.min_input_size = int(meta.get("min_size", 1))
        self.align = int(meta.get("align", 32))
        self.recipe = meta.get("recipe", {})
        record = meta.get("output_window")  # valid convolutions: the scores cover a centred window of the input
        self._window_of = None if record is None else shifted_window(
            tuple(record["input"]), Window(*record["window"]), int(meta.get("size_step", 1)))

    def output_window(self, height: int, width: int) -> Window:
        """Where the graph's scores lie on a ``height`` x ``width`` input (all of it but for valid convolutions,
        whose window the file records): prediction then tiles and mirrors as it does for the model itself."""
        return Window.full(height, width) if self._window_of is None else self._window_of(height, width)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        try:
            out = self.session.run(None, {self.input_name: x.detach().float().cpu().contiguous().numpy()})[0]
        except Exception as exc:  # noqa: BLE001 - a graph that does not fit its own metadata
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(f"onnxruntime failed on {self.path} for an input of {tuple(x.shape)} ({first}); "
                                  "the file's graph or metadata is damaged: export it again") from None
        h, w = self.output_window(*x.shape[2:]).size  # the input's size, but for a valid-convolution graph
        if out.ndim != 4 or tuple(out.shape) != (x.shape[0], self.num_classes, h, w):
            raise CheckpointError(f"{self.path}'s graph returned {tuple(out.shape)} for {tuple(x.shape)}, not "
                                  f"N x {self.num_classes} x {h} x {w} as its metadata says; export it again")
        return torch.from_numpy(out)

    def eval(self) -> OnnxModel:
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        return self


def describe(model: Any) -> dict[str, Any]:
    """The facts prediction needs from a torch ``SegmentationModel`` or an :class:`OnnxModel`."""
    if isinstance(model, OnnxModel):
        return {"normalization": model.normalization, "num_classes": model.num_classes, "in_chans": model.in_chans,
                "min_size": model.min_input_size, "align": model.align}
    backbone = getattr(model, "backbone", None)
    strides = [f.stride for f in getattr(backbone, "feature_info", [])] or [1]
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return {"normalization": dict(model.normalization), "num_classes": int(model.num_classes),
            "in_chans": int(conv.in_channels) if conv is not None else 3,
            "min_size": int(getattr(backbone, "min_input_size", 1)), "align": int(max(strides))}

"""A trained model out of Python: ONNX (dynamic batch, height and width), TorchScript, or a ``torch.export`` program.

Every export checks itself before it is kept: the artifact is written to a temporary file, run at three
input sizes that were not used to export it (one of them odd, 3 x 97 x 131), and compared with the torch
model; only when the largest difference is at most ``1e-4`` of the logits' scale is it renamed to the
destination. The model's description travels inside the file (ONNX ``metadata_props``, TorchScript and
``torch.export`` extra files, all under ``segzoo.*``): class names, normalization, the recipe as JSON and the
smallest side the graph takes, so a consumer needs nothing else.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.export import Dim

from ..core.errors import InputError, SegzooError
from ..core.model import SegmentationModel

FORMATS = ("onnx", "torchscript", "exported")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported": ".pt2"}
CHECK_SIZES = ((1, 97, 131), (2, 128, 96), (1, 160, 224))  # (batch, H, W); none is the export example
TOLERANCE = 1e-4  # of the logits' scale (their largest magnitude)
OPSET = 18
META_FILE = "segzoo.json"


class ExportError(SegzooError):
    """An export that cannot be made or that does not reproduce the torch model."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote and how closely it reproduces the torch model at each checked size."""

    path: Path
    format: str
    diffs: tuple[tuple[tuple[int, ...], float, float], ...]  # (input shape, max abs diff, logits' scale)

    def lines(self) -> list[str]:
        out = [f"{self.format}: {self.path}"]
        for shape, diff, scale in self.diffs:
            out.append(f"  check {'x'.join(map(str, shape))}: max abs diff {diff:.3g} "
                       f"(logits' scale {scale:.3g}, ratio {diff / max(scale, 1e-12):.2g}, limit {TOLERANCE:g})")
        return out


def metadata(model: SegmentationModel, min_size: int) -> dict[str, str]:
    """The ``segzoo.*`` strings an exported file carries (all JSON), read back by :func:`read_metadata`."""
    recipe = model.recipe
    names = list(recipe.class_names) if recipe.class_names else [f"class_{i}" for i in range(model.num_classes)]
    return {
        "segzoo.recipe": json.dumps(recipe.to_dict(), sort_keys=True, default=str),
        "segzoo.class_names": json.dumps(names),
        "segzoo.normalization": json.dumps(model.normalization),
        "segzoo.num_classes": json.dumps(model.num_classes),
        "segzoo.min_size": json.dumps(min_size),
        "segzoo.in_chans": json.dumps(in_channels(model)),
        "segzoo.align": json.dumps(max(f.stride for f in model.backbone.feature_info)),
    }


def in_channels(model: torch.nn.Module) -> int:
    """The channels the model's first convolution reads (3 for RGB backbones)."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return int(conv.in_channels) if conv is not None else 3


def min_side(model: SegmentationModel) -> int:
    """The smallest height and width the exported graph promises: the backbone's minimum, and at least twice the
    coarsest stride, so no feature map is ever a single cell (a 1-wide map would broadcast and specialise the graph);
    for a geometry that takes only some sizes (valid convolutions), the first of them from there.
    """
    strides = [f.stride for f in model.backbone.feature_info]
    return taken_side(model, max(int(model.backbone.min_input_size), 2 * max(strides)))


def taken_side(model: SegmentationModel, side: int) -> int:
    """The smallest side from ``side`` up that the model's geometry takes (every side, for most models)."""
    for n in range(side, side + 4096):
        try:
            model.backbone.check_size(n, n)
            model.output_window(n, n)
        except InputError:
            continue
        return n
    raise ExportError(f"the model takes no input side from {side} to {side + 4096}")


def size_step(model: SegmentationModel, low: int) -> int:
    """The step between the input sides the model takes from ``low`` (1 for most; 16 for the depth-4 U-Net, whose
    2x2 pools need even maps): the exported graph's sides are ``low + step * k``."""
    return taken_side(model, low + 1) - low


def export_model(model: SegmentationModel, fmt: str, out: str | os.PathLike[str], force: bool = False,
                 check: bool = True, opset: int = OPSET,
                 check_sizes: tuple[tuple[int, int, int], ...] = CHECK_SIZES) -> ExportReport:
    """Export ``model`` (put in eval mode) as ``fmt`` to ``out``, checked at three sizes (see the module's doc).

    An existing ``out`` is refused unless ``force``; nothing is written when the export or its check fails.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} exists; choose another --out or pass --force to replace it")
    if out.is_dir():
        raise ExportError(f"{out} is a folder; --out names the file to write")
    model = model.eval().float().cpu()  # segzoo.core.accel's fast convs are plain convs to the exporters
    low = min_side(model)
    step = size_step(model, low)
    chans = in_channels(model)
    # sides low + step * k: an example at k = 0 or 1 would be taken for a constant by torch.export
    side = low if step == 1 else low + 2 * step
    example = torch.randn(2, chans, side, side + step, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(torch.randn(1, chans, low, low))  # eager first: the model's own checks run, frozen layers are recognised
    meta = metadata(model, low)
    window = model.output_window(low, low)
    if step > 1 or not window.is_full(low, low):  # valid convolutions: where the scores lie, which sizes it takes
        meta["segzoo.output_window"] = json.dumps({"input": [low, low], "window": [window.top, window.left,
                                                                                   window.height, window.width]})
        meta["segzoo.size_step"] = json.dumps(step)
        check_sizes = tuple((n, taken_side(model, h), taken_side(model, w)) for n, h, w in check_sizes)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=SUFFIXES[fmt], dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write = {"onnx": _write_onnx, "torchscript": _write_torchscript, "exported": _write_exported}[fmt]
        runner = write(model, example, tmp, meta, (low, step), opset)
        diffs = compare(model, runner, chans, check_sizes) if check else ()
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's files are owner-only; an export gets the usual permissions
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportReport(out, fmt, diffs)


def compare(model: torch.nn.Module, runner: Callable[[torch.Tensor], torch.Tensor], chans: int = 3,
            sizes: tuple[tuple[int, int, int], ...] = CHECK_SIZES) -> tuple[tuple[tuple[int, ...], float, float], ...]:
    """Run torch and the exported artifact on the same random inputs; fail beyond :data:`TOLERANCE` of the scale."""
    gen = torch.Generator().manual_seed(1)
    diffs = []
    for n, h, w in sizes:
        x = torch.randn(n, chans, h, w, generator=gen)
        with torch.no_grad():
            want = model(x)
            got = runner(x)
        if tuple(got.shape) != tuple(want.shape):
            raise ExportError(f"the exported model returned {tuple(got.shape)} for an input of {tuple(x.shape)}, "
                              f"torch {tuple(want.shape)}; the export is wrong, please report it")
        diff, scale = float((got - want).abs().max()), float(want.abs().max())
        diffs.append(((n, chans, h, w), diff, scale))
        if diff > TOLERANCE * max(scale, 1e-12):
            raise ExportError(f"the exported model differs from torch by {diff:.3g} at {n}x{chans}x{h}x{w} "
                              f"(logits' scale {scale:.3g}, allowed {TOLERANCE:g} of it); not written")
    return tuple(diffs)


def _dynamic_shapes(low: tuple[int, int]) -> tuple[dict[int, Any], ...]:
    """Batch, height and width dynamic; a geometry that takes every ``step``-th side gets sides ``low + step * k``."""
    side, step = low
    if step == 1:
        return ({0: Dim("batch", min=1, max=1024), 2: Dim("height", min=side, max=1 << 15),
                 3: Dim("width", min=side, max=1 << 15)},)
    kh, kw = Dim("kh", min=0, max=(1 << 15) // step), Dim("kw", min=0, max=(1 << 15) // step)
    return ({0: Dim("batch", min=1, max=1024), 2: step * kh + side, 3: step * kw + side},)


def _program(model: torch.nn.Module, example: torch.Tensor, low: tuple[int, int]) -> torch.export.ExportedProgram:
    shapes = logging.getLogger("torch.fx.experimental.symbolic_shapes")  # sympy's "cannot solve" tracebacks
    level = shapes.level
    shapes.setLevel(logging.ERROR)
    try:
        return torch.export.export(model, (example,), dynamic_shapes=_dynamic_shapes(low))
    except Exception as exc:  # noqa: BLE001 - torch's own errors are many and long; one line says which model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.export could not trace this model with dynamic batch, height and width: {first}; "
                          "its forward branches on a tensor's size (see segzoo.core.layers.fit_to for the fix)"
                          ) from exc
    finally:
        shapes.setLevel(level)


def _write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str],
                low: tuple[int, int], opset: int) -> Callable[[torch.Tensor], torch.Tensor]:
    onnx, ort = _onnx_modules()
    if opset < 17:
        raise ExportError(f"ONNX export needs opset 17 or newer, got {opset}")
    program = _program(model, example, low)
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, opset_version=opset,
                                             input_names=["image"], output_names=["logits"], verbose=False)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    proto = onnx_program.model_proto
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "segzoo"
    onnx.save(proto, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _write_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str],
                       low: tuple[int, int], opset: int) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarning, and the FutureWarning that TorchScript is deprecated
        traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={META_FILE: json.dumps(meta)})
        loaded = torch.jit.load(str(path))
    return lambda x: loaded(x)


def _write_exported(model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str],
                    low: tuple[int, int], opset: int) -> Callable[[torch.Tensor], torch.Tensor]:
    program = _program(model, example, low)
    torch.export.save(program, str(path), extra_files={META_FILE: json.dumps(meta)})
    loaded = torch.export.load(str(path)).module()
    return lambda x: loaded(x)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``segzoo.*`` entries of an exported file, decoded (``{"class_names": [...], "normalization": {...}}``)."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnx, _ = _onnx_modules()
        proto = onnx.load(str(path), load_external_data=False)
        raw = {p.key: p.value for p in proto.metadata_props}
    else:
        files = {META_FILE: ""}
        if is_torchscript(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.load(str(path), _extra_files=files)
        else:
            torch.export.load(str(path), extra_files=files)
        raw = json.loads(files[META_FILE] or "{}")
    return {k.removeprefix("segzoo."): json.loads(v) for k, v in raw.items() if k.startswith("segzoo.")}


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """Whether a zip archive from torch is a TorchScript module (it pickles its constants) or a ``torch.export`` one."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{path} is not a TorchScript or torch.export archive ({exc})") from None


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"ONNX needs the optional packages onnx and onnxruntime ({exc.name} is missing); "
                          "install them with: pip install 'segzoo[export]'") from None
    return onnx, onnxruntime

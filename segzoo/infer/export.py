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
import errno
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

from ..core.errors import CheckpointError, InputError, SegzooError
from ..core.files import check_output_path, current_umask, disk_full_message
from ..core.model import SegmentationModel
from ..core.recipe import Recipe
from ..core.window import shifted_window
from ..io.checkpoint import load_exported_program, read_archive_file
from ..io.remote import kind, locate, upload

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

    path: Path | str  # the local file, or the URL it was uploaded to
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
    ``out`` may be a URL (``s3://``, ``memory://``...: :mod:`segzoo.io.remote`): the checked file is uploaded.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        check_opset(opset)
    loc = locate(out, "export", writing=True)
    if loc.local is not None:  # never one of its inputs, a folder, or an existing file without --force
        check_output_path(loc.local, (), force, error=ExportError)
    else:
        found = kind(loc)
        if found == "directory":
            raise ExportError(f"{loc.text} is a folder; --out names the file to write")
        if found and not force:
            raise ExportError(f"{loc.text} exists; choose another --out or pass --force to replace it")
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
        rule = shifted_window((low, low), window, step)  # what a runtime rebuilds from the metadata
        for _, h, w in check_sizes:
            if rule(h, w) != model.output_window(h, w):
                raise ExportError(f"the model's output window at {h}x{w} is {model.output_window(h, w)}, not the "
                                  f"{rule(h, w)} its window at {low}x{low} implies: a file's metadata cannot "
                                  "describe a window whose margins change with the input size")
    try:
        with contextlib.ExitStack() as stack:
            # beside the target, so the rename is atomic; for a URL, a local folder, then one upload
            folder = loc.local.parent if loc.local is not None else Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="segzoo-export-")))
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{loc.name}.", suffix=SUFFIXES[fmt], dir=folder)
            os.close(fd)
            tmp = Path(tmp_name)
            stack.callback(tmp.unlink, missing_ok=True)  # a no-op once renamed; after any failure, the cleanup
            write = {"onnx": _write_onnx, "torchscript": _write_torchscript, "exported": _write_exported}[fmt]
            runner = write(model, example, tmp, meta, (low, step), opset)
            diffs = compare(model, runner, chans, check_sizes) if check else ()
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's files are owner-only; an export gets the usual ones
            if loc.local is None:
                upload(tmp, loc, overwrite=force)
                return ExportReport(loc.text, fmt, diffs)
            os.replace(tmp, loc.local)
    except OSError as exc:
        raise _write_error(exc, loc.local if loc.local is not None else Path(loc.name)) from None
    return ExportReport(loc.local, fmt, diffs)


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
        if not bool(torch.isfinite(want).all()):
            raise ExportError(f"the torch model itself gives NaN or Inf logits at {n}x{chans}x{h}x{w}: its weights "
                              "are broken (a diverged run?); not written")
        if not bool(torch.isfinite(got).all()):
            raise ExportError(f"the exported model gives NaN or Inf logits at {n}x{chans}x{h}x{w} where torch does "
                              "not; not written")
        if tuple(got.shape) != tuple(want.shape):
            raise ExportError(f"the exported model returned {tuple(got.shape)} for an input of {tuple(x.shape)}, "
                              f"torch {tuple(want.shape)}; the export is wrong, please report it")
        diff, scale = float((got - want).abs().max()), float(want.abs().max())
        diffs.append(((n, chans, h, w), diff, scale))
        if not diff <= TOLERANCE * max(scale, 1e-12):  # `not <=`: a NaN difference fails too
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
    check_opset(opset)
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
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter falls back to its own opset when it cannot convert, without a word
        raise ExportError(f"ONNX export could not write opset {opset} (the exporter made opset {written}); "
                          f"pass --opset {written} or newer")
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "segzoo"
    with open(path, "wb") as f:  # Python's write: a full disk is an OSError, not a C++ abort
        f.write(proto.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _write_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str],
                       low: tuple[int, int], opset: int) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarning, and the FutureWarning that TorchScript is deprecated
        traced = torch.jit.trace(model, (example,), check_trace=False)
        buf = io.BytesIO()  # built in memory, written by Python: torch's C++ writer aborts on a full disk
        torch.jit.save(traced, buf, _extra_files={META_FILE: json.dumps(meta)})
        path.write_bytes(buf.getbuffer())
        loaded = torch.jit.load(str(path))
    return lambda x: loaded(x)


def _write_exported(model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str],
                    low: tuple[int, int], opset: int) -> Callable[[torch.Tensor], torch.Tensor]:
    program = _program(model, example, low)
    buf = io.BytesIO()  # built in memory, written by Python: torch's C++ writer aborts on a full disk
    torch.export.save(program, buf, extra_files={META_FILE: json.dumps(meta)})
    path.write_bytes(buf.getbuffer())
    loaded = load_exported_program(path).module()
    return lambda x: loaded(x)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``segzoo.*`` entries of an exported file, decoded and checked (:func:`check_metadata`):
    ``{"class_names": [...], "normalization": {...}, ...}``. Read as plain data: the ONNX protobuf, or the
    extra file inside a TorchScript or ``torch.export`` zip, so nothing in the file is unpickled or run."""
    path = Path(path)
    if path.suffix == ".onnx":
        raw = onnx_metadata(path)
    else:
        data = read_archive_file(path, META_FILE)
        try:
            raw = json.loads(data.decode("utf-8")) if data else {}
        except (UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(f"{path}: its {META_FILE} is not JSON ({exc}); export the model again") from None
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise CheckpointError(f"{path}: its {META_FILE} is not segzoo's metadata; export the model again")
    return check_metadata(raw, path)


MAX_METADATA_BYTES = 16 << 20


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` as a dict, the graph's tensors left unread (one line for any bad file)."""
    onnx, _ = _onnx_modules()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a regular file; pass an .onnx file written by "
                              "segzoo export")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise CheckpointError(f"{path} is not a readable ONNX file ({type(exc).__name__}); export it again") from None
    return {p.key: p.value for p in proto.metadata_props}


def check_metadata(raw: dict[str, str], path: str | os.PathLike[str]) -> dict[str, Any]:
    """Decode the ``segzoo.*`` strings and check them as a checkpoint's recipe is checked: a normalization of
    finite numbers with every std > 0, a class count from 1 to 255 with one name each, positive sizes. A file
    that fails is one :class:`CheckpointError`: a tampered or foreign file must not give NaN predictions."""
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        if not key.startswith("segzoo."):
            continue
        if len(value) > MAX_METADATA_BYTES:
            raise CheckpointError(f"{path}: its metadata {key} is {len(value):,} characters; not a file segzoo wrote")
        try:
            meta[key.removeprefix("segzoo.")] = json.loads(value)
        except ValueError:
            raise CheckpointError(f"{path}: its metadata {key} is not JSON; export the model again") from None
    if not meta:
        return meta

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: its segzoo metadata is damaged ({what}); export the model again")

    try:
        if "normalization" in meta:
            if not isinstance(meta["normalization"], dict):
                raise bad(f"normalization {meta['normalization']!r:.40} is not a mapping of mean and std")
            Recipe(name="metadata", backbone="metadata", head="metadata", normalization=meta["normalization"])
        if "recipe" in meta:
            Recipe.from_dict(meta["recipe"], where=f"{path}: its recipe")
    except SegzooError as exc:
        raise bad(str(exc)) from None
    n = meta.get("num_classes")
    if "num_classes" in meta and not (type(n) is int and 1 <= n <= 255):
        raise bad(f"num_classes {n!r:.40}, not an integer from 1 to 255")
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(c, str) for c in names)
                                  and (n is None or len(names) == n)):
        raise bad(f"class_names {names!r:.60} is not one name per class")
    for key in ("in_chans", "min_size", "align", "size_step"):
        v = meta.get(key)
        if key in meta and not (type(v) is int and 1 <= v <= 1 << 15):
            raise bad(f"{key} {v!r:.40}, not an integer from 1 to 32768")
    if "output_window" in meta:
        record = meta["output_window"]
        try:
            (ih, iw), (top, left, wh, ww) = record["input"], record["window"]
            ok = all(type(v) is int for v in (ih, iw, top, left, wh, ww)) and (
                0 <= top and 0 <= left and 0 < wh and 0 < ww and top + wh <= ih <= 1 << 15
                and left + ww <= iw <= 1 << 15)
        except (TypeError, ValueError, KeyError):
            ok = False
        if not ok:
            raise bad(f"output_window {record!r:.60} is not an input size and a window inside it")
    norm = meta.get("normalization")
    chans = meta.get("in_chans")
    if isinstance(norm, dict) and chans is not None and len(norm["mean"]) not in (1, chans):
        raise bad(f"normalization has {len(norm['mean'])} channels for in_chans {chans}")
    return meta


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """Whether a zip archive from torch is a TorchScript module (it pickles its constants) or a ``torch.export`` one."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{path} is not a TorchScript or torch.export archive ({exc})") from None


def check_opset(opset: int) -> None:
    """The ONNX opsets segzoo writes: 17 up to the newest the installed ``onnx`` package knows."""
    onnx, _ = _onnx_modules()
    newest = int(onnx.defs.onnx_opset_version())
    if type(opset) is not int or not 17 <= opset <= newest:
        raise ExportError(f"--opset {opset}: segzoo writes ONNX opsets 17 to {newest} (the newest this onnx package "
                          f"knows); default {OPSET}")


def _write_error(exc: OSError, out: Path) -> SegzooError | OSError:
    """A full disk while exporting as one line naming the disk; other OS errors as they are."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ExportError(disk_full_message(out))
    return exc


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"ONNX needs the optional packages onnx and onnxruntime ({exc.name} is missing); "
                          "install them with: pip install 'segzoo[export]'") from None
    return onnx, onnxruntime

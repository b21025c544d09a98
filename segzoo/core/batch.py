"""The training contract: where a model's output lies on its input, and what a loss sees of a batch.

Two kinds of model and two kinds of label meet here, so every loss and every metric reads them one way:

- a model's scores cover its input (FCN, padded U-Nets) or a centred :class:`Window` of it (the original
  U-Net's valid convolutions: 572 x 572 in, 388 x 388 out); labels are cropped to that window once, before
  any loss or metric sees them;
- a sample carries a pixel mask, or only image-level labels (the classes it contains), or both; a
  :class:`Batch` holds them for the whole batch, with ``has_mask`` saying which is which.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError


@dataclass(frozen=True)
class Window:
    """The rows ``top .. top+height-1`` and columns ``left .. left+width-1`` of the input, in input pixels."""

    top: int
    left: int
    height: int
    width: int

    @classmethod
    def full(cls, height: int, width: int) -> Window:
        return cls(0, 0, int(height), int(width))

    @classmethod
    def centred(cls, height: int, width: int, out_height: int, out_width: int) -> Window:
        """The ``out_height`` x ``out_width`` window centred on a ``height`` x ``width`` input (extra pixel at the
        bottom/right when the margins are odd)."""
        if not (0 < out_height <= height and 0 < out_width <= width):
            raise InputError(f"an output of {out_height}x{out_width} does not fit in an input of {height}x{width}")
        return cls((height - out_height) // 2, (width - out_width) // 2, int(out_height), int(out_width))

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def is_full(self, height: int, width: int) -> bool:
        return self == Window.full(height, width)

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, columns): index an H x W (x C) array with them."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        """``t``'s last two dimensions cut to the window (a view)."""
        return t[(..., *self.slices)]


@dataclass
class Batch:
    """What a loss sees besides the scores: the targets of one batch, already in the model's output window.

    ``mask``: N x h x w int64 class indices, 255 (void) where a pixel has no label; a sample without a pixel
    mask is all 255. ``has_mask``: N bools, which samples carry a pixel mask. ``image_labels``: N x C floats,
    1 for each class an image contains (background included), or ``None`` when no sample of the batch has any.
    """

    mask: torch.Tensor
    has_mask: torch.Tensor
    image_labels: torch.Tensor | None = None

    @classmethod
    def from_masks(cls, mask: torch.Tensor) -> Batch:
        """Every sample pixel-labelled: the batch of a plain segmentation dataset."""
        return cls(mask, torch.ones(mask.shape[0], dtype=torch.bool, device=mask.device))

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def has_image_labels(self) -> torch.Tensor:
        """N bools: the samples that carry image-level labels (rows of ``image_labels`` with any class set)."""
        if self.image_labels is None:
            return torch.zeros_like(self.has_mask)
        return self.image_labels.sum(1) > 0

    def counts(self) -> dict[str, int]:
        """How many samples of each kind the batch holds (``mask``: pixel masks; ``image``: image labels only)."""
        masked = int(self.has_mask.sum())
        image_only = int((self.has_image_labels & ~self.has_mask).sum())
        return {"mask": masked, "image": image_only}

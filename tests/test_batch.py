"""The training contract's records: where a model's output lies (Window) and what a loss sees (Batch)."""

from __future__ import annotations

import pytest
import torch

from segzoo.core.batch import Batch, Window
from segzoo.core.errors import InputError


def test_a_centred_window_crops_the_middle_and_puts_an_odd_margin_at_the_bottom_right():
    w = Window.centred(7, 10, 4, 6)
    assert (w.top, w.left, w.size) == (1, 2, (4, 6))
    t = torch.arange(70).reshape(1, 7, 10)
    assert torch.equal(w.crop(t), t[:, 1:5, 2:8])
    assert Window.centred(572, 572, 388, 388).top == 92  # the U-Net paper's 572 -> 388
    assert Window.full(7, 10).is_full(7, 10) and not w.is_full(7, 10)
    with pytest.raises(InputError, match="does not fit"):
        Window.centred(4, 4, 5, 4)


def test_a_batch_counts_its_kinds_of_label():
    masks = Batch.from_masks(torch.zeros(3, 2, 2, dtype=torch.long))
    assert masks.counts() == {"mask": 3, "image": 0} and len(masks) == 3 and masks.image_labels is None
    mixed = Batch(torch.zeros(3, 2, 2, dtype=torch.long), torch.tensor([True, False, False]),
                  torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]))
    # the third sample has neither a mask nor image labels: it counts as neither kind
    assert mixed.counts() == {"mask": 1, "image": 1}
    assert mixed.has_image_labels.tolist() == [True, True, False]

"""The paper's four metrics against hand-computed examples, from one confusion matrix over the dataset."""

from __future__ import annotations

import pytest
import torch

from segzoo.train.metrics import ConfusionMatrix, metrics_from_confusion, report, summary_line


def test_hand_computed_example_with_void_pixels():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1, 1, 2, 2, 0]), torch.tensor([0, 0, 0, 1, 1, 2, 255]))
    # n = [[2, 1, 0], [0, 1, 1], [0, 0, 1]]: t = (3, 2, 1), predicted = (2, 2, 2); the 255 pixel is not counted
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = cm.compute(["bg", "cat", "dog"])
    assert m["pixel_acc"] == pytest.approx(4 / 6)
    assert m["mean_acc"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["per_class_iu"] == pytest.approx({"bg": 2 / 3, "cat": 1 / 3, "dog": 1 / 2})
    assert m["mean_iu"] == pytest.approx(0.5)
    assert m["fw_iu"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 3 + 1 * 1 / 2) / 6)
    assert m["pixels"] == 6
    assert "mean IU" in report(m) and "dog" in report(m)


def test_classes_absent_from_both_are_left_out_of_the_means():
    four = ConfusionMatrix(4)
    four.update(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 2]))
    three = ConfusionMatrix(3)
    three.update(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 2]))
    a, b = four.compute(), three.compute()
    assert a["per_class_iu"]["3"] is None and a["per_class_acc"]["3"] is None
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert a[key] == pytest.approx(b[key])


def test_a_class_only_predicted_counts_as_zero_iu_but_has_no_accuracy():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1]))
    m = cm.compute()
    assert m["per_class_iu"]["2"] == 0.0 and m["per_class_acc"]["2"] is None
    assert m["mean_iu"] == pytest.approx((1 / 2 + 1 + 0) / 3)  # class 2: a false positive, IU 0, in the mean
    assert m["mean_acc"] == pytest.approx((1 / 2 + 1) / 2)  # class 2 has no ground truth: no accuracy


def test_accumulated_over_the_dataset_not_averaged_per_image():
    cm = ConfusionMatrix(2)
    cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))  # image A: all correct
    cm.update(torch.tensor([[0]]), torch.tensor([[1]]))  # image B: its one class-1 pixel missed
    assert cm.compute()["mean_iu"] == pytest.approx((4 / 5 + 0) / 2)  # per-image averaging would give 0.5


def test_batched_predictions_and_matrix_sums():
    pred, target = torch.randint(0, 5, (2, 8, 8)), torch.randint(0, 5, (2, 8, 8))
    whole, parts = ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(pred, target)
    for i in range(2):
        parts.update(pred[i], target[i])
    assert torch.equal(whole.matrix, parts.matrix)
    m = metrics_from_confusion(whole.matrix + parts.matrix)  # what an all-reduce over two ranks gives
    assert m["pixels"] == 256 and m["mean_iu"] == pytest.approx(whole.compute()["mean_iu"])
    with pytest.raises(ValueError, match="differ in shape"):
        whole.update(pred, target[0])


def test_the_documented_rule_and_example_match_the_code():
    """docs/metrics.md (linked from the README) says how absent classes leave the means; its example is this one."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme, doc = (root / "README.md").read_text(), (root / "docs" / "metrics.md").read_text()
    assert "absent from both the ground truth and the prediction" in doc and "(docs/metrics.md)" in readme
    assert "in neither the ground truth nor the prediction" in doc
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1]))  # the example: ground truth 0 0 1, prediction 0 2 1
    m = cm.compute()
    assert m["per_class_iu"] == {"0": 0.5, "1": 1.0, "2": 0.0, "3": None}
    assert m["per_class_acc"] == {"0": 0.5, "1": 1.0, "2": None, "3": None}
    assert (m["mean_iu"], m["mean_acc"]) == (0.5, 0.75) and "mean IU = (1/2 + 1 + 0) / 3 = 0.5" in doc
    assert m["pixel_acc"] == pytest.approx(2 / 3) and m["fw_iu"] == pytest.approx(2 / 3)


def halves(edge: int, size: int = 64) -> torch.Tensor:
    """A size x size map: class 0 left of column ``edge``, class 1 from it on."""
    m = torch.zeros(size, size, dtype=torch.long)
    m[:, edge:] = 1
    return m


def test_an_edge_shifted_by_2_pixels_costs_boundary_iou_while_region_iu_barely_moves():
    from segzoo.train.metrics import BoundaryIoU

    truth, shifted = halves(32), halves(34)
    cm, b2, b3 = ConfusionMatrix(2), BoundaryIoU(2, px=2), BoundaryIoU(2, px=3)
    for metric in (cm, b2, b3):
        metric.update(shifted, truth)
    # region: class 0 2048 of 2176 pixels, class 1 1920 of 2048
    assert cm.compute()["mean_iu"] == pytest.approx((2048 / 2176 + 1920 / 2048) / 2)  # 0.939
    # bands at 2 px: truth columns 30-31 (class 0) and 32-33 (1), prediction 32-33 (0) and 34-35 (1): disjoint
    assert b2.counts.tolist() == [[0, 0], [128, 128], [128, 128]]
    assert b2.compute()["boundary_iou"] == 0.0
    # at 3 px (docs/metrics.md): truth 29-31 | 32-34, prediction 31-33 | 34-36; each class shares one column of 5
    assert b3.compute()["boundary_iou"] == pytest.approx(0.2)
    perfect = BoundaryIoU(2, px=2)
    perfect.update(truth, truth)
    assert perfect.compute()["boundary_iou"] == 1.0 and perfect.compute()["boundary_px"] == 2


def test_boundary_iou_leaves_void_out_and_the_frame_is_no_contour():
    from segzoo.train.metrics import BoundaryIoU

    truth = halves(32)
    truth[:, 32] = 255  # a void outline where the edge is, as the demo data has
    results = []
    for edge in (32, 33, 34):  # either side of the void pixel, or one labelled pixel further
        b = BoundaryIoU(2, px=2)
        b.update(halves(edge), truth)
        results.append(b.compute()["boundary_iou"])
    assert results[:2] == [1.0, 1.0]  # the truth does not say on which side of the void pixel the edge is
    assert results[2] < 1.0  # an edge on a labelled pixel is judged
    uniform = BoundaryIoU(3, px=2)
    uniform.update(torch.zeros(8, 8, dtype=torch.long), torch.zeros(8, 8, dtype=torch.long))
    assert uniform.counts.sum() == 0
    assert uniform.compute()["per_class_boundary_iou"] == {"0": None, "1": None, "2": None}


def test_boundary_iou_accumulates_over_the_split_and_reports_beside_the_region_metrics():
    from segzoo.train.metrics import BoundaryIoU, boundary_from_counts

    batch, one_by_one = BoundaryIoU(2, px=2), BoundaryIoU(2, px=2)
    preds, truths = torch.stack([halves(34), halves(32)]), torch.stack([halves(32), halves(32)])
    batch.update(preds, truths)
    for p, t in zip(preds, truths):
        one_by_one.update(p, t)
    assert torch.equal(batch.counts, one_by_one.counts)
    # class 0: 128 pixels in both of 256 + 256 - 128 in either, not the mean of the per-image IoUs (0 and 1)
    assert batch.compute()["per_class_boundary_iou"]["0"] == pytest.approx(128 / 384)
    cm = ConfusionMatrix(2)
    cm.update(preds, truths)
    m = {**cm.compute(["bg", "fg"]), **boundary_from_counts(batch.counts, 2, ["bg", "fg"])}
    text = report(m)
    assert "boundary IoU (2 px)" in text and "boundary IoU %" in text


def test_a_class_in_the_truth_but_never_predicted_is_named_in_the_summary_line():
    cm = ConfusionMatrix(4)
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    cm.update(torch.tensor([0, 0, 0, 0, 2, 2]), target)  # class 1 is there, never predicted; class 3 is nowhere
    m = cm.compute(["bg", "grey", "white", "csf"])
    assert m["never_predicted"] == ["grey"] and m["per_class_iu"]["grey"] == 0.0
    assert summary_line(m).endswith("  never predicted: grey")
    cm.update(torch.tensor([1, 1]), torch.tensor([1, 0]))
    done = cm.compute(["bg", "grey", "white", "csf"])
    assert done["never_predicted"] == [] and "never predicted" not in summary_line(done)

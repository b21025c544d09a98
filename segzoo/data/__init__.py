"""Datasets (VOC, folder pairs, split lists), the demo generator, joint transforms and mask I/O."""

from .dataset import SegmentationDataset, check_dataset, collate, open_dataset
from .demo import write_demo_dataset
from .formats import PairList, find_pairs
from .io import IGNORE_INDEX, VOC_CLASSES, colorize, overlay, read_image, read_mask, voc_palette, write_mask
from .label_map import LabelMap, load_label_map
from .loader import make_loader
from .sampler import ShardedSampler
from .transforms import eval_transform, normalize, train_transform, window_transform

__all__ = [
    "IGNORE_INDEX", "VOC_CLASSES", "LabelMap", "PairList", "SegmentationDataset", "ShardedSampler", "check_dataset",
    "colorize", "collate", "eval_transform", "find_pairs", "load_label_map", "make_loader", "normalize", "open_dataset",
    "overlay", "read_image", "read_mask", "train_transform", "voc_palette", "window_transform", "write_demo_dataset",
    "write_mask",
]

"""Predict masks for images: a VOC-palette PNG and a side-by-side overlay per image (--probs: softmax .npy)."""

from __future__ import annotations

import argparse

from ..api import load_model
from ..infer.predict import predict_files
from ..train.runtime import resolve_device

COMMAND = "predict"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="a model or training checkpoint (.pt)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs")
    p.add_argument("--probs", action="store_true", help="also save per-class softmax probabilities (C x H x W .npy)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")


def run(args: argparse.Namespace) -> int:
    model = load_model(args.checkpoint)
    written = predict_files(model, args.images, args.out, probs=args.probs, device=resolve_device(args.device))
    for path in written:
        print(path)
    return 0

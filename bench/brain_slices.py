"""A small real dataset that ships in a wheel: axial slices of the MNI152 brain template, 3 classes.

Usage: python bench/brain_slices.py --out /tmp/brain [--size 64] [--bits 8|16]
Needs ``pip install nilearn`` (the ICBM152 2009a template and its grey/white-matter probability maps ship in
nilearn/datasets/data/ as NIfTI; nibabel, which nilearn depends on, reads them). Each axial slice of the T1
volume becomes a grey PNG (8 or 16 bits), and its mask the most likely of background (everything that is
neither grey nor white matter: CSF, skull, air), grey matter and white matter. Slices go round-robin into
train (4 of 6), val and test, so the three splits span the same brain, and a folder pair with
class_names.txt is written (docs/ablation-real-data.md trains on it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("background", "grey_matter", "white_matter")


def volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, grey-matter and white-matter volumes (uint8, 197 x 233 x 189) from nilearn's package data."""
    import nibabel
    import nilearn

    data = Path(nilearn.__file__).parent / "datasets" / "data"
    out = []
    for kind in ("t1", "gm", "wm"):
        image = nibabel.load(data / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz")
        out.append(np.asarray(image.dataobj))
    return out[0], out[1], out[2]


def labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """The most likely class of each voxel; background's probability is what grey and white matter leave."""
    g, w = gm.astype(np.float32) / 255, wm.astype(np.float32) / 255
    background = np.clip(1 - g - w, 0, 1)
    return np.stack([background, g, w]).argmax(0).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--bits", type=int, choices=(8, 16), default=8)
    ap.add_argument("--first", type=int, default=40, help="first axial slice")
    ap.add_argument("--last", type=int, default=160, help="last axial slice (excluded)")
    ap.add_argument("--step", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists; give a new --out")
    t1, gm, wm = volumes()
    mask = labels(gm, wm)
    splits = ("train", "train", "train", "train", "val", "test")
    counts = {s: 0 for s in splits}
    for i, z in enumerate(range(args.first, args.last, args.step)):
        split = splits[i % len(splits)]
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "masks").mkdir(parents=True, exist_ok=True)
        # the slice as seen from above, nose up: rows are y (flipped), columns x
        image = np.flipud(t1[:, :, z].T)
        label = np.flipud(mask[:, :, z].T)
        grey = Image.fromarray(image).resize((args.size, args.size), Image.BILINEAR)
        if args.bits == 16:
            grey = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
        grey.save(out / split / "images" / f"z{z:03d}.png")
        Image.fromarray(np.ascontiguousarray(label)).resize((args.size, args.size), Image.NEAREST).save(
            out / split / "masks" / f"z{z:03d}.png")
        counts[split] += 1
    (out / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    pixels = np.bincount(mask[:, :, args.first:args.last:args.step].ravel(), minlength=3)
    share = ", ".join(f"{c} {100 * n / pixels.sum():.0f}%" for c, n in zip(CLASSES, pixels))
    print(f"wrote {out}: {counts['train']} train, {counts['val']} val, {counts['test']} test slices of "
          f"{args.size}x{args.size} ({args.bits}-bit grey); voxels: {share}")


if __name__ == "__main__":
    main()

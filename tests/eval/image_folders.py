"""A small ImageNet-style folder of real photographs (scikit-image's sample images), plus one corrupt file.

Used by the eval tests, and importable on its own to try twins-eval by hand:

    python tests/eval/image_folders.py /tmp/skimage-folder
"""

from __future__ import annotations

import sys
from pathlib import Path

# class folder -> [(skimage.data function, file name, transform)]
PHOTOS = {
    "astronaut": [("astronaut", "astronaut.jpg", None), ("astronaut", "astronaut_flip.png", "flip")],
    "cat": [("chelsea", "chelsea.jpg", None), ("chelsea", "chelsea_crop.jpg", "crop")],
    "coffee": [("coffee", "coffee.png", None), ("coffee", "coffee_flip.jpg", "flip")],
    "rocket": [("rocket", "rocket.jpg", None), ("camera", "camera_gray.png", None)],
}
CORRUPT = "cat/broken.jpg"
NUM_GOOD = sum(map(len, PHOTOS.values()))


def make_image_folder(root: str | Path, corrupt: bool = True) -> Path:
    """Write the photographs as JPEG/PNG into one subfolder per class; returns `root`."""
    import numpy as np
    import skimage.data
    from PIL import Image

    root = Path(root)
    for cls, items in PHOTOS.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for func, name, how in items:
            a = getattr(skimage.data, func)()
            if how == "flip":
                a = np.ascontiguousarray(a[:, ::-1])
            elif how == "crop":
                h, w = a.shape[:2]
                a = a[h // 8: h - h // 8, w // 6: w - w // 6]
            Image.fromarray(a).save(root / cls / name, quality=92)
    if corrupt:
        (root / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" + bytes(64))
    return root


if __name__ == "__main__":
    print(make_image_folder(sys.argv[1] if len(sys.argv) > 1 else "skimage-folder"))

"""Image folders that only colour can classify."""

import numpy as np
from PIL import Image

# Equal luminance under ITU-R 601 (what grayscale conversion computes): 0.299·196 ≈ 0.587·100 ≈ 58.6.
RED, GREEN = (196, 0, 0), (0, 100, 0)


def hue_folder(root, n=24, size=12):
    rng = np.random.default_rng(0)
    for label, colour in (("green", GREEN), ("red", RED)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(np.array(colour) + rng.integers(-8, 9, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / label / f"{i}.png")
    return root

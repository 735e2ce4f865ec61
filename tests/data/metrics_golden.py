"""Reference PSNR / SSIM / MSE for tests/metrics.rs, computed with scikit-image.

Writes a few deterministic image pairs as 8-bit PNGs under tests/data/metrics/{a,b}/ and the
expected values (on the PNGs' pixel values / 255) to tests/data/metrics/expected.json.
Conventions: data_range 1; SSIM with an 11x11 Gaussian window (sigma 1.5, truncate 3.5),
K1 0.01, K2 0.03, population covariance, per channel then averaged (Wang et al. 2004).

Regenerate (numpy, scikit-image and Pillow from PyPI):  python tests/data/metrics_golden.py
"""
import json
import os

import numpy as np
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics")
rng = np.random.RandomState(7)


def smooth(h, w, c):
    y, x = np.mgrid[0:h, 0:w]
    base = [0.5 + 0.4 * np.sin(x / (3 + k) + y / (5 + k)) for k in range(c)]
    return np.stack(base, -1)


pairs = {}
# grey 32x32: noise
a = smooth(32, 32, 1)[..., 0]
pairs["grey_noise"] = (a, np.clip(a + rng.normal(0, 0.08, a.shape), 0, 1))
# RGB 24x20 (h x w): a shifted copy
a = smooth(24, 20, 3)
pairs["rgb_shift"] = (a, np.roll(a, 2, axis=1))
# RGB 16x16: random vs random
pairs["rgb_random"] = (rng.uniform(0, 1, (16, 16, 3)), rng.uniform(0, 1, (16, 16, 3)))
# grey 28x28: contrast change
a = smooth(28, 28, 1)[..., 0]
pairs["grey_contrast"] = (a, 0.5 + 0.6 * (a - 0.5))

expected = {}
for name, (x, y) in pairs.items():
    q = []
    for side, img in (("a", x), ("b", y)):
        u8 = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
        os.makedirs(os.path.join(here, side), exist_ok=True)
        Image.fromarray(u8).save(os.path.join(here, side, name + ".png"))
        q.append(u8.astype(np.float64) / 255.0)
    x, y = q
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    if x.ndim == 3:
        kw["channel_axis"] = -1
    expected[name] = {
        "mse": float(mean_squared_error(x, y)),
        "psnr": float(peak_signal_noise_ratio(x, y, data_range=1.0)),
        "ssim": float(structural_similarity(x, y, **kw)),
    }
json.dump(expected, open(os.path.join(here, "expected.json"), "w"), indent=1, sort_keys=True)
print(json.dumps(expected, indent=1))

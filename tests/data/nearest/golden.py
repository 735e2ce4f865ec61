"""Golden values of tests/nearest.rs, computed without the crate: the raw-pixel nearest support
over the episodes in episodes.jsonl (written by `lqae-eval --suite nearest-fashionmnist --set
episodes.count=100 --set tokens.per_image=16 --set 'baselines=["pixels"]'`), from the
Fashion-MNIST test file itself. Rule: cosine of the 784 grey bytes / 255, the query takes the
label of the most similar support, the first shown on a tie. Pure Python, no dependencies.

    python3 tests/data/nearest/golden.py ~/.cache/lqae/fashion-mnist/t10k-images-idx3-ubyte.gz \
        > tests/data/nearest/golden.json
"""
import gzip, json, math, os, sys

raw = gzip.open(sys.argv[1]).read()
assert int.from_bytes(raw[:4], "big") == 2051, "not an IDX image file"
n, rows, cols = (int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(3))
size = rows * cols

def pixels(key):
    i = int(key)
    return [b / 255 for b in raw[16 + i * size:16 + (i + 1) * size]]

def cos(a, b):
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return 0.0 if na == 0 or nb == 0 else sum(x * y for x, y in zip(a, b)) / (na * nb)

cells = {}
here = os.path.dirname(os.path.abspath(__file__))
for line in open(os.path.join(here, "episodes.jsonl")):
    e = json.loads(line)
    q = pixels(e["query"]["image"])
    best, label = None, None
    for s in e["support"]:
        sim = cos(q, pixels(s["image"]))
        if best is None or sim > best:
            best, label = sim, s["label"]
    c = cells.setdefault(f'{e["ways"]}-way-{e["shots"]}-shot', [0, 0])
    c[0] += label == e["query"]["label"]
    c[1] += 1
json.dump({"pixels": {k: {"correct": v[0], "n": v[1]} for k, v in sorted(cells.items())}}, sys.stdout, indent=1)
print()

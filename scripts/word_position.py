"""How much of a token's grid position its word gives away: the mutual information between the
word and the position over every token of a tokens file (`lqae-eval encode --model M --data
fashion-mnist --split test --out F`), in bits, beside log2(tokens per image), its maximum (a
word used at one position only). Pure Python.

    python3 scripts/word_position.py tokens.jsonl [more.jsonl ...]
"""
import json, math, sys
from collections import Counter

for path in sys.argv[1:]:
    with open(path) as f:
        next(f)  # the header
        rows = [json.loads(line)["ids"] for line in f if line.strip()]
    t = len(rows[0])
    joint, word = Counter(), Counter()
    for r in rows:
        for p, w in enumerate(r):
            joint[(p, w)] += 1
            word[w] += 1
    n = len(rows) * t
    mi = sum(c / n * math.log2((c / n) / (word[w] / n / t)) for (p, w), c in joint.items())
    print(f"{path}: {len(rows)} images, {len(word)} distinct words, "
          f"I(word; position) = {mi:.2f} of {math.log2(t):.2f} bits")

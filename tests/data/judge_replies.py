"""Real replies of the few-shot judges, for the answer parser's unit tests
(src/eval/kinds/fewshot/answer.rs reads judge_replies.json).

Each judge is served by the project's own llama-server (built by scripts/build-llama-server.sh,
models fetched by `lqae-eval fetch <judge asset>`), for example:

    S=~/.cache/lqae/llama-server/llama-server
    $S -m ~/.cache/lqae/qwen2.5-coder-1.5b/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf --port 18080 -t 2 &
    python3 tests/data/judge_replies.py qwen2.5-coder-1.5b http://127.0.0.1:18080
    $S -m ~/.cache/lqae/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --port 18081 -t 1 &
    python3 tests/data/judge_replies.py smollm2 http://127.0.0.1:18081

The prompts are few-shot prompts exactly as the suite writes them (the default templates): eight
episodes of a fewshot-fashionmnist run with lqae-fmnist tokens (judge_prompts.json), and eight
built here with oracle tokens (every image of a class one word, 16 times). The requests are the
suite's (`generate`: greedy, 8 tokens, no stop sequence), through /v1/completions and, for four
prompts, /v1/chat/completions. The script adds or replaces its judge's entry in
judge_replies.json; it needs only Python's standard library.
"""

import json
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]
WORDS = ["apple", "river", "stone", "violin", "tiger", "candle", "harbor", "maple", "copper",
         "meadow"]


def label_list(labels):
    q = ['"%s"' % l for l in labels]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " or " + q[-1]


def oracle_prompt(classes, query, induction):
    word = {c: WORDS[CLASSES.index(c)] for c in classes}
    p = "Classify the context into %s.\n" % label_list(classes) if induction else ""
    for c in classes:
        p += "Context: %s\nClassification: %s.\n" % (" ".join([word[c]] * 16), c)
    return p + "Context: %s\nClassification:" % " ".join([word[query]] * 16)


def prompts():
    out = json.load(open(os.path.join(HERE, "judge_prompts.json")))
    episodes = [
        (["Shirt", "T-shirt/top"], "Shirt", False),
        (["T-shirt/top", "Shirt"], "T-shirt/top", True),
        (["Pullover", "Bag"], "Pullover", True),
        (["Sandal", "Ankle boot"], "Ankle boot", False),
        (["Coat", "Dress", "Sneaker", "Trouser", "Bag"], "Dress", True),
        (["Coat", "Dress", "Sneaker", "Trouser", "Bag"], "Trouser", False),
        (["Shirt", "Pullover", "T-shirt/top", "Coat", "Sandal"], "T-shirt/top", True),
        (["Shirt", "Pullover", "T-shirt/top", "Coat", "Sandal"], "Coat", False),
    ]
    for classes, query, induction in episodes:
        out.append({"prompt": oracle_prompt(classes, query, induction), "label": query,
                    "source": "oracle tokens"})
    return out


def ask(url, api, text):
    if api == "chat":
        body = {"model": "judge", "messages": [{"role": "user", "content": text}]}
        path = "/v1/chat/completions"
    else:
        body = {"model": "judge", "prompt": text}
        path = "/v1/completions"
    body.update({"temperature": 0.0, "max_tokens": 8, "cache_prompt": False})
    req = urllib.request.Request(url + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    r = json.load(urllib.request.urlopen(req, timeout=300))
    c = r["choices"][0]
    return c["text"] if api == "completions" else c["message"]["content"]


def main():
    judge, url = sys.argv[1], sys.argv[2].rstrip("/")
    path = os.path.join(HERE, "judge_replies.json")
    data = json.load(open(path)) if os.path.exists(path) else {}
    replies = []
    for k, p in enumerate(prompts()):
        for api in (["completions", "chat"] if k % 4 == 0 else ["completions"]):
            replies.append({"api": api, "source": p["source"], "label": p["label"],
                            "reply": ask(url, api, p["prompt"])})
            print(judge, api, repr(replies[-1]["reply"]), "| true:", p["label"])
    data[judge] = replies
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()

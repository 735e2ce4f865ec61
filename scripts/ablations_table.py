"""The ablation table of scripts/ablations.sh: one row per run, from its log.jsonl and results."""
import glob, json, math, os, sys

out, steps, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = ["| run | settings | PSNR unmasked (dB) | PSNR mask 0.15 (dB) | SSIM | distinct codes / 300 images | special share | probe top-1 | nearest support 2-way / 5-way, 16 tokens | same, 64 tokens | z norm | best cos | margin | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for spec in specs:
    name, cfg, sets = spec.split(":", 2)
    log = [json.loads(l) for l in open(f"{out}/{name}/log.jsonl")]
    last = log[-1]
    d = last.get("diag", {})
    ips = sum(l["images_per_s"] for l in log[1:]) / max(1, len(log) - 1)
    r = json.load(open(glob.glob(f"{out}/res-{name}/recon-fashionmnist/*/result.json")[0]))
    rep = r["extra"]["models"][0]
    tok = r["extra"]["tokens"][rep]
    m = r["metrics"]
    probe = glob.glob(f"{out}/res-{name}/linear-fashionmnist/*/result.json")
    top1 = json.load(open(probe[0]))["metrics"]["lqae/top1"]["value"] if probe else None
    ns = glob.glob(f"{out}/res-{name}/nearest-fashionmnist/*/result.json")
    nm = json.load(open(ns[0]))["metrics"] if ns else {}
    def pair(n):
        v = [nm.get(f"lqae/per_image-{n}/{w}-way-1-shot", {}).get("value") for w in (2, 5)]
        return " / ".join(f"{x:.1%}" for x in v) if None not in v else "-"
    p15 = d.get("heldout_mse_mask0.15")
    rows.append("| {} | `{}` {} | {:.2f} | {} | {:.3f} | {} | {:.1%} | {} | {} | {} | {:.2f} | {:.3f} | {:.4f} | {:.0f} |".format(
        name, os.path.basename(cfg), sets.replace(";", " ") if sets != "-" else "",
        m[f"{rep}/psnr"]["value"],
        f"{-10 * math.log10(p15):.2f} (32 img)" if p15 else "-",
        m[f"{rep}/ssim"]["value"], tok["codes_used"], tok["special_share"],
        f"{top1:.3f}" if top1 is not None else "-", pair(16), pair(64),
        d.get("z_norm", float("nan")), d.get("best_cosine", float("nan")), d.get("cosine_margin", float("nan")), ips))
print(f"{steps} steps of batch 16 each, one thread per run; PSNR/SSIM/codes over 300 Fashion-MNIST test images (unmasked), probe on 1000 train / 500 test images; nearest support (no LLM) over the 1,000 episodes per cell of suites/nearest-fashionmnist.toml.\n")
print("\n".join(rows))

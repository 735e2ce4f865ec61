"""The ablation table of scripts/ablations.sh: one row per run, from its log.jsonl and results."""
import glob, json, math, os, sys

out, steps, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = ["| run | settings | PSNR unmasked (dB) | PSNR mask 0.15 (dB) | SSIM | distinct codes / 300 images | special share | probe top-1 | z norm | best cos | margin | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
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
    p15 = d.get("heldout_mse_mask0.15")
    rows.append("| {} | `{}` {} | {:.2f} | {} | {:.3f} | {} | {:.1%} | {} | {:.2f} | {:.3f} | {:.4f} | {:.0f} |".format(
        name, os.path.basename(cfg), sets.replace(";", " ") if sets != "-" else "",
        m[f"{rep}/psnr"]["value"],
        f"{-10 * math.log10(p15):.2f} (32 img)" if p15 else "-",
        m[f"{rep}/ssim"]["value"], tok["codes_used"], tok["special_share"],
        f"{top1:.3f}" if top1 is not None else "-",
        d.get("z_norm", float("nan")), d.get("best_cosine", float("nan")), d.get("cosine_margin", float("nan")), ips))
print(f"{steps} steps of batch 16 each, one thread per run; PSNR/SSIM/codes over 300 Fashion-MNIST test images (unmasked), probe on 1000 train / 500 test images.\n")
print("\n".join(rows))

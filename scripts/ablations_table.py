"""The ablation table of scripts/ablations.sh: one row per run, from its log.jsonl and results;
with `--plot PNG` (matplotlib, scripts/plot-requirements.txt) also the plot of each run's
reconstruction against its words' class signal, beside the pixels' and the VQ-VAE's."""
import glob, json, math, os, sys

args = sys.argv[1:]
plot = None
if "--plot" in args:
    i = args.index("--plot")
    plot = args[i + 1]
    del args[i:i + 2]
out, steps, specs = args[0], args[1], args[2:]
points = []
rows = ["| run | settings | PSNR unmasked (dB) | PSNR mask 0.15 (dB) | SSIM | distinct codes / 300 images | special share | probe top-1 | nearest support 2-way / 5-way, 16 tokens | same, 64 tokens | z norm | best cos | margin | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for spec in specs:
    name, cfg, sets = spec.split(":", 2)
    if not os.path.exists(f"{out}/{name}/trained"):
        print(f"{name}: not trained (failed or still running), left out", file=sys.stderr)
        continue
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
    if nm:
        points.append((name, m[f"{rep}/psnr"]["value"],
                       [nm[f"lqae/per_image-16/{w}-way-1-shot"] for w in (2, 5)]))
    rows.append("| {} | `{}` {} | {:.2f} | {} | {:.3f} | {} | {:.1%} | {} | {} | {} | {:.2f} | {:.3f} | {:.4f} | {:.0f} |".format(
        name, os.path.basename(cfg), sets.replace(";", " ") if sets != "-" else "",
        m[f"{rep}/psnr"]["value"],
        f"{-10 * math.log10(p15):.2f} (32 img)" if p15 else "-",
        m[f"{rep}/ssim"]["value"], tok["codes_used"], tok["special_share"],
        f"{top1:.3f}" if top1 is not None else "-", pair(16), pair(64),
        d.get("z_norm", float("nan")), d.get("best_cosine", float("nan")), d.get("cosine_margin", float("nan")), ips))
print(f"{steps} steps of batch 16 each, one thread per run; PSNR/SSIM/codes over 300 Fashion-MNIST test images (unmasked), probe on 1000 train / 500 test images; nearest support (no LLM) over the 1,000 episodes per cell of suites/nearest-fashionmnist.toml.\n")
print("\n".join(rows))

if plot:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    here = os.path.dirname(os.path.abspath(__file__))
    base = json.load(open(glob.glob(f"{here}/../results/baselines/nearest-fashionmnist/*/result.json")[0]))["metrics"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True)
    for ax, w, target in zip(axes, (2, 5), (0.80, 0.55)):
        for k, (name, psnr, ns) in enumerate(points):
            m = ns[w == 5]
            ax.errorbar(psnr, 100 * m["value"], yerr=[[100 * (m["value"] - m["ci95"][0])], [100 * (m["ci95"][1] - m["value"])]],
                        fmt="o", color=f"C{k % 10}", capsize=3, label=name)
        for key, style, label in ((f"pixels/{w}-way-1-shot", "k--", "raw pixels"),
                                  (f"vqvae/per_image-16/{w}-way-1-shot", "k:", "vqvae-fmnist codes (16)"),
                                  (f"lqae/per_image-16/{w}-way-1-shot", "k-.", "lqae-fmnist as shipped (16)")):
            if key in base:
                ax.axhline(100 * base[key]["value"], color=style[0], linestyle=style[1:], linewidth=1, label=label)
        ax.axhline(100 * target, color="tab:red", linewidth=1, label=f"target {target:.0%}")
        ax.axhline(100 / w, color="grey", linewidth=0.8, label="chance")
        ax.set_title(f"{w}-way 1-shot nearest support, 16 words per image")
        ax.set_xlabel("reconstruction PSNR (dB, 300 test images)")
        ax.set_ylabel("top-1 % (1,000 episodes, 95% interval)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"Words' class signal against reconstruction, {steps}-step runs")
    fig.tight_layout()
    fig.savefig(plot, dpi=110)

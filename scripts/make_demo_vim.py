#!/usr/bin/python3
"""Trains the bundled Vision Mamba demo, models/colours-vim: what colour is the one object on a textured background?

    /usr/bin/python3 scripts/make_demo_vim.py            (a few minutes on one core; deterministic)

Task (generated here, so the object mask of every image is known): a 32×32 RGB image of a smooth random greyish
texture with one filled shape — disc, square, triangle or cross — of random size and position; the label is the
object's colour (red, green, blue or yellow), which only the object's pixels carry.
Writes models/colours-vim/:
  model.safetensors      the weights under the official Vim names (scripts/reference/vim_ref.py), F32
  labels.json            class index → name
  heldout/NNN.png        64 held-out images (never trained on), heldout/NNN.mask.png their object masks (255 = object)
  heldout.jsonl          {"image", "mask", "label", "class"} per held-out image
  README.md              what the model is, its accuracy
and tests/data/vim/colours-reference.safetensors (pixels of held-out image 0 and the reference logits) for the C++
parity test. The model: img 32, patch 4 (64 patches + the middle class token), D 48, 3 layers, E 96, N 8, 4 classes.
"""
import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "reference"))
import mamba_ref as ref  # noqa: E402
import vim_ref  # noqa: E402

OUT = os.path.join(ROOT, "models", "colours-vim")
CLASSES = ["red", "green", "blue", "yellow"]
IMG, PATCH, D, DEPTH, N = 32, 4, 48, 3, 8
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


COLOURS = np.array([[0.85, 0.15, 0.15], [0.15, 0.7, 0.2], [0.2, 0.3, 0.9], [0.9, 0.8, 0.1]])


def make_image(rng):
    """One example: uint8 image [32, 32, 3], bool mask [32, 32], class index. The class is the colour of the one
    object (red, green, blue, yellow); the object's shape (disc, square, triangle or cross), size and place are random,
    on a smooth random greyish texture, so only the object's pixels carry the answer."""
    yy, xx = np.mgrid[0:IMG, 0:IMG].astype(np.float64)
    tex = np.zeros((IMG, IMG, 3))
    for _ in range(4):  # smooth texture: a few random plane waves, a little colour
        f = rng.uniform(0.1, 0.6, size=2)
        ph = rng.uniform(0, 2 * math.pi)
        amp = rng.uniform(0.05, 0.15) + rng.uniform(-0.03, 0.03, size=3)
        tex += amp * np.sin(f[0] * xx + f[1] * yy + ph)[..., None]
    tex += rng.uniform(0.35, 0.65) + rng.normal(0, 0.03, size=(IMG, IMG, 3))
    c = int(rng.integers(len(CLASSES)))
    shape = int(rng.integers(4))
    r = rng.uniform(3.5, 7.0)
    cx, cy = rng.uniform(r + 1, IMG - r - 1, size=2)
    dx, dy = xx - cx, yy - cy
    if shape == 0:
        mask = dx ** 2 + dy ** 2 <= r ** 2
    elif shape == 1:
        mask = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    elif shape == 2:
        mask = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    else:
        w = r * 0.35
        mask = ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    colour = COLOURS[c] + rng.uniform(-0.08, 0.08, size=3)
    img = np.where(mask[..., None], colour + rng.normal(0, 0.03, size=(IMG, IMG, 3)), tex)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), mask, c


def to_pixels(img_u8):
    """ToTensor + ImageNet Normalize (DeiT applies no resize or crop to 32-pixel inputs) → [3, 32, 32]."""
    x = img_u8.astype(np.float32) / 255.0
    return torch.from_numpy(((x - MEAN) / STD).astype(np.float32).transpose(2, 0, 1).copy())


class BatchedVim(torch.nn.Module):
    """The forward of vim_ref.forward, batched for training (same parameters and names)."""

    def __init__(self, sd):
        super().__init__()
        self.p = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(v.float().clone()) for k, v in sd.items()})

    def w(self, name):
        return self.p[name.replace(".", "__")]

    def direction(self, x, z, m, sfx):
        B, T, E = x.shape
        K = self.w(m + f"conv1d{sfx}.weight").shape[-1]
        xc = torch.nn.functional.conv1d(x.transpose(1, 2), self.w(m + f"conv1d{sfx}.weight"),
                                        self.w(m + f"conv1d{sfx}.bias"), padding=K - 1, groups=E)[:, :, :T]
        u = torch.nn.functional.silu(xc.transpose(1, 2))
        A = -torch.exp(self.w(m + ("A_log" if sfx == "" else "A_b_log")))
        Nn = A.shape[1]
        W_dt = self.w(m + f"dt_proj{sfx}.weight")
        R = W_dt.shape[1]
        xd = u @ self.w(m + f"x_proj{sfx}.weight").t()
        dt, Bm, Cm = xd[..., :R], xd[..., R:R + Nn], xd[..., R + Nn:]
        delta = torch.nn.functional.softplus(dt @ W_dt.t() + self.w(m + f"dt_proj{sfx}.bias"))
        dA = torch.exp(delta[..., None] * A)                                  # [B, T, E, N]
        dBu = delta[..., None] * Bm[:, :, None, :] * u[..., None]
        h = torch.zeros(B, E, Nn)
        ys = []
        for t in range(T):
            h = dA[:, t] * h + dBu[:, t]
            ys.append((h * Cm[:, t, None, :]).sum(-1))
        ssm = torch.stack(ys, 1)
        return (ssm + u * self.w(m + ("D" if sfx == "" else "D_b"))) * torch.nn.functional.silu(z)

    def forward(self, pixels):                                               # [B, 3, 32, 32]
        Bsz = pixels.shape[0]
        pt = torch.nn.functional.conv2d(pixels, self.w("patch_embed.proj.weight"), self.w("patch_embed.proj.bias"),
                                        stride=PATCH).flatten(2).transpose(1, 2)  # [B, M, D]
        M = pt.shape[1]
        cls = M // 2
        tok = torch.cat([pt[:, :cls], self.w("cls_token").expand(Bsz, 1, D), pt[:, cls:]], 1) + self.w("pos_embed")
        h = tok
        for i in range(DEPTH):
            p, m = f"layers.{i}.", f"layers.{i}.mixer."
            nrm = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * self.w(p + "norm.weight")
            xz = nrm @ self.w(m + "in_proj.weight").t()
            E = xz.shape[-1] // 2
            x, z = xz[..., :E], xz[..., E:]
            yf = self.direction(x, z, m, "")
            yb = self.direction(torch.flip(x, [1]), torch.flip(z, [1]), m, "_b")
            h = h + ((yf + torch.flip(yb, [1])) / 2) @ self.w(m + "out_proj.weight").t()
        hf = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * self.w("norm_f.weight")
        return hf[:, cls] @ self.w("head.weight").t() + self.w("head.bias")

    def state_dict_official(self):
        return {k.replace("__", "."): v.detach().clone() for k, v in self.p.items()}


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: no OpenMP spin-waits when the machine is busy
    rng = np.random.default_rng(2024)
    n_train, n_held = 3000, 64
    data = [make_image(rng) for _ in range(n_train + n_held)]
    X = torch.stack([to_pixels(d[0]) for d in data])
    Y = torch.tensor([d[2] for d in data])
    Xtr, Ytr, Xte, Yte = X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]

    sd = vim_ref.random_state_dict(7, D=D, depth=DEPTH, N=N, img=IMG, patch=PATCH, classes=len(CLASSES))
    sd["pos_embed"] = sd["pos_embed"] * 0.04  # ViT-like small position / class embeddings at the start
    sd["cls_token"] = sd["cls_token"] * 0.04
    model = BatchedVim(sd)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    steps, bs = 120, 32
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        idx = torch.randint(0, n_train, (bs,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(Xtr[idx]), Ytr[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 40 == 0 or step == steps - 1:
            with torch.no_grad():
                acc = (model(Xte).argmax(-1) == Yte).float().mean().item()
            print(f"step {step}: loss {loss.item():.3f}, held-out accuracy {acc:.3f}", flush=True)
    with torch.no_grad():
        acc = (model(Xte).argmax(-1) == Yte).float().mean().item()
        train_acc = (model(Xtr[:1000]).argmax(-1) == Ytr[:1000]).float().mean().item()
    final = {k: v.float().contiguous() for k, v in model.state_dict_official().items()}
    # The batched training forward and the reference agree on the stored weights.
    l_ref, _ = vim_ref.forward({k: v.double() for k, v in final.items()}, Xte[0].double(), collect=False)
    with torch.no_grad():
        l_bat = model(Xte[:1]).double()[0]
    assert float((l_ref - l_bat).abs().max()) < 1e-3, (l_ref, l_bat)

    os.makedirs(os.path.join(OUT, "heldout"), exist_ok=True)
    ref.write_safetensors(os.path.join(OUT, "model.safetensors"), final)
    with open(os.path.join(OUT, "labels.json"), "w") as f:
        json.dump({str(i): n for i, n in enumerate(CLASSES)}, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "heldout.jsonl"), "w") as f:
        for k in range(n_held):
            img, mask, c = data[n_train + k]
            Image.fromarray(img).save(os.path.join(OUT, "heldout", f"{k:03d}.png"), optimize=False)
            Image.fromarray((mask * 255).astype(np.uint8)).save(os.path.join(OUT, "heldout", f"{k:03d}.mask.png"))
            f.write(json.dumps({"image": f"heldout/{k:03d}.png", "mask": f"heldout/{k:03d}.mask.png",
                                "label": CLASSES[c], "class": c}) + "\n")
    params = sum(v.numel() for v in final.values())
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(f"""# colours-vim — the bundled Vision Mamba demo

A tiny Vision Mamba (official Vim layout: patch {PATCH}, {IMG}×{IMG} images, 64 patches + the middle class token,
d_model {D}, {DEPTH} layers, d_state {N}, {params:,} parameters) trained by `scripts/make_demo_vim.py` to tell the
colour — {", ".join(CLASSES)} — of the one object (a disc, square, triangle or cross of random size and place) drawn
on a random smooth texture. Held-out accuracy: {acc:.1%} on {n_held} images never
trained on (training accuracy {train_acc:.1%}). `heldout/` holds those images and their object masks (white = the
object), `heldout.jsonl` lists them with their labels.

    build/ssmx predict models/colours-vim --image models/colours-vim/heldout/000.png
    build/ssmx explain models/colours-vim --image models/colours-vim/heldout/000.png --method mamba-lrp,rollout --figure fig.png
""")
    # Parity fixture for the C++ test: held-out image 0 through the reference.
    pix0 = to_pixels(data[n_train][0])
    l0, _ = vim_ref.forward({k: v.double() for k, v in final.items()}, pix0.double(), collect=False)
    ref.write_safetensors(os.path.join(ROOT, "tests", "data", "vim", "colours-reference.safetensors"),
                          {"pixels": pix0.contiguous(), "logits": l0.float().contiguous()})
    print(f"held-out accuracy {acc:.3f}, train {train_acc:.3f}, {params} parameters; wrote {OUT}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the image fixtures of tests/io/test_image.cpp and tests/render/test_overlay.cpp into tests/data/images/.

Run with Debian's Python (/usr/bin/python3 scripts/make_image_fixtures.py): it needs python3-pil (9.4 made the
committed files), numpy and torch. torchvision is not needed: its evaluation transforms are written out below on
top of PIL and torch exactly as torchvision 0.14 applies them to a PIL image —

  Resize(size)       shorter side -> size, longer side -> int(size * long / short), PIL Image.resize(BICUBIC)
  CenterCrop(crop)   zero padding if the crop is larger (left/top get the floor half), then
                     offsets int(round((H - crop) / 2)), int(round((W - crop) / 2)) and Image.crop
  ToTensor           uint8 HWC -> float32 CHW, .div(255)
  Normalize          .sub_(mean).div_(std) with float32 mean/std tensors

Every image is synthetic (seeded), so running the script twice gives identical files. Images are opened the way
torchvision's ImageFolder loader does: Image.open(path).convert("RGB").

With `--stress DIR` it writes 300 random images and their PIL resizes to DIR instead, for the opt-in test
ImageIo.StressAgainstPil (run ssmx_tests with SSMX_IMAGE_STRESS_DIR=DIR).

Outputs, next to the source images:
  <name>.decoded.png     PIL's decoded RGB pixels (JPEG: libjpeg's decoder; the C++ side uses stb_image)
  <name>.resized.png     after Resize (uint8; the bit-exact reference of the C++ resampler; PNG sources only)
  (the crop)             not stored: the manifest gives its offsets in <name>.resized.png
  <name>.pixels.npy      float32 [3, crop, crop] after ToTensor + Normalize (only for cases with "tensor": true)
  upsample_14x14.npy, upsample_14x14_224.npy
                         a random 14x14 map and F.interpolate(scale_factor=16, mode="bilinear",
                         align_corners=False) of it, as the hidden-attention notebooks upsample
  manifest.json          the cases and their parameters (read by the C++ tests)
"""
import io
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "images")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ---- torchvision 0.14 semantics, for PIL images ---------------------------------------------------------------

def tv_resize(img, size):
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.BICUBIC)


def tv_center_crop(img, crop):
    w, h = img.size
    if crop > w or crop > h:
        left = (crop - w) // 2 if crop > w else 0
        top = (crop - h) // 2 if crop > h else 0
        right = (crop - w + 1) // 2 if crop > w else 0
        bottom = (crop - h + 1) // 2 if crop > h else 0
        padded = Image.new(img.mode, (w + left + right, h + top + bottom), 0)
        padded.paste(img, (left, top))
        img = padded
        w, h = img.size
        if (w, h) == (crop, crop):
            return img
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def tv_crop_offsets(img, crop):
    w, h = img.size
    assert crop <= w and crop <= h
    return int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))


def tv_to_tensor_normalize(img):
    arr = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
    t = arr.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(STD, dtype=torch.float32).view(-1, 1, 1)
    return t.sub_(mean).div_(std)


def deit_sizes(input_size):
    """DeiT build_transform(is_train=False): Resize(int(input_size / 0.875)), CenterCrop(input_size)."""
    return int(input_size / 0.875), input_size


# ---- synthetic pictures ----------------------------------------------------------------------------------------

def scene(w, h, seed):
    """Smooth gradients, hard-edged discs and bars (ringing and clipping in the bicubic filter), a band of
    one-pixel stripes (the antialiasing support), and a little noise. Compresses well as PNG."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    img[..., 0] = 255 * x / max(1, w - 1)
    img[..., 1] = 255 * y / max(1, h - 1)
    img[..., 2] = 128 + 100 * np.sin(x / 17.0 + y / 23.0)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.25) * min(w, h)
        col = rng.choice([0, 255], size=3)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = col
    bx0, bx1 = int(w * 0.1), int(w * 0.5)
    by0, by1 = int(h * 0.75), int(h * 0.85)
    stripes = ((x.astype(int) % 2) * 255)[by0:by1, bx0:bx1]
    img[by0:by1, bx0:bx1] = stripes[..., None]
    # Sparse noise keeps the PNGs small while exercising the rounding.
    mask = rng.random((h, w)) < 0.004
    img[mask] += rng.normal(0, 40, size=(int(mask.sum()), 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_source(name, w, h, kind, seed):
    rgb = scene(w, h, seed)
    path = os.path.join(OUT, name)
    if kind == "rgb":
        im = Image.fromarray(rgb, "RGB")
    elif kind == "grey":
        im = Image.fromarray(rgb, "RGB").convert("L")
    elif kind == "rgba":
        alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
        im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif kind == "palette":
        im = Image.fromarray(rgb, "RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        im.info["transparency"] = 3
    else:
        raise ValueError(kind)
    if name.endswith(".jpg"):
        im.save(path, "JPEG", quality=90)
    elif kind == "palette":
        im.save(path, "PNG", transparency=3, optimize=True)
    else:
        im.save(path, "PNG", optimize=True)


CASES = [
    # name, width, height, kind, seed, model input size, write the normalised tensor
    ("rgb_640x480.png", 640, 480, "rgb", 1, 224, True),      # downscale, crop offset 58.5 -> 58 (ties to even)
    ("rgb_300x200.png", 300, 200, "rgb", 2, 224, False),     # upscale (200 -> 256)
    ("rgb_333x517.png", 333, 517, "rgb", 3, 224, False),     # portrait, odd, downscale
    ("grey_97x131.png", 97, 131, "grey", 4, 224, False),     # L mode, odd, upscale
    ("rgba_150x100.png", 150, 100, "rgba", 5, 224, False),   # alpha dropped by convert("RGB")
    ("palette_120x90.png", 120, 90, "palette", 6, 224, False),  # P mode with tRNS
    ("rgb_300x200_in64.png", 300, 200, "rgb", 7, 64, True),  # tiny-model transform: Resize(73), CenterCrop(64)
    ("rgb_400x300.jpg", 400, 300, "rgb", 8, 224, False),     # JPEG: decoders differ, see docs/images.md
    ("grey_200x150.jpg", 200, 150, "grey", 9, 224, False),   # greyscale JPEG
]

# Padding branch of CenterCrop: crop 160 of the 97x131 image without resizing (pads 32+31 columns, 15+14 rows).
PAD_CASE = ("grey_97x131.png", 160)


def save_png(img, path):
    img.save(path, "PNG", optimize=True)


def stress(out_dir, n=300):
    """Random images and PIL's bicubic resizes of them (1..399 pixels, a third strong downscales, half with hard
    0/255 edges) for the opt-in C++ test ImageIo.StressAgainstPil (SSMX_IMAGE_STRESS_DIR=out_dir)."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        w, h = (int(v) for v in rng.integers(1, 400, size=2))
        ow, oh = (int(v) for v in rng.integers(1, 400, size=2))
        if k % 3 == 0:
            ow, oh = int(w * rng.uniform(0.05, 0.5)) + 1, int(h * rng.uniform(0.05, 0.5)) + 1
        a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        if k % 2:
            a = (a // 128 * 255).astype(np.uint8)
        im = Image.fromarray(a, "RGB")
        im.save(os.path.join(out_dir, f"s{k}.png"))
        im.resize((ow, oh), Image.BICUBIC).save(os.path.join(out_dir, f"r{k}.png"))
    print(f"{n} stress pairs in {out_dir}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--stress":
        stress(sys.argv[2])
        return
    os.makedirs(OUT, exist_ok=True)
    manifest = {"pil_version": Image.__version__, "torch_version": torch.__version__, "cases": []}
    jpeg_stats = {}
    for name, w, h, kind, seed, input_size, with_tensor in CASES:
        make_source(name, w, h, kind, seed)
        stem = os.path.splitext(name)[0] + ("_jpg" if name.endswith(".jpg") else "")
        img = Image.open(os.path.join(OUT, name)).convert("RGB")
        resize, crop = deit_sizes(input_size)
        resized = tv_resize(img, resize)
        cropped = tv_center_crop(resized, crop)
        case = {"file": name, "mode": kind, "width": w, "height": h, "input_size": input_size, "resize": resize,
                "crop": crop, "resized_width": resized.size[0], "resized_height": resized.size[1]}
        if kind != "rgb" or name.endswith(".jpg"):
            save_png(img, os.path.join(OUT, stem + ".decoded.png"))
            case["decoded"] = stem + ".decoded.png"
        if not name.endswith(".jpg"):  # for JPEG the decoded pixels are the reference (size budget)
            save_png(resized, os.path.join(OUT, stem + ".resized.png"))
            case["resized"] = stem + ".resized.png"
        # The crop is not stored: it is the resized image's sub-rectangle at these offsets (checked here).
        left, top = tv_crop_offsets(resized, crop)
        assert np.array_equal(np.asarray(cropped), np.asarray(resized)[top:top + crop, left:left + crop])
        case["crop_left"], case["crop_top"] = left, top
        if with_tensor:
            t = tv_to_tensor_normalize(cropped).numpy()
            assert t.shape == (3, crop, crop) and t.dtype == np.float32
            np.save(os.path.join(OUT, stem + ".pixels.npy"), t)
            case["pixels"] = stem + ".pixels.npy"
            case["pixels_range"] = [float(t.min()), float(t.max())]
        manifest["cases"].append(case)
        print(f"{name:24s} {kind:8s} {w}x{h} -> resize {resized.size} -> crop {cropped.size}")

    name, crop = PAD_CASE
    img = Image.open(os.path.join(OUT, name)).convert("RGB")
    padded = tv_center_crop(img, crop)
    save_png(padded, os.path.join(OUT, "grey_97x131.pad160.png"))
    manifest["pad_case"] = {"file": name, "crop": crop, "cropped": "grey_97x131.pad160.png"}

    # Bilinear upsampling of a patch map, as Mamba-Attr / Transformer-Explainability do it.
    g = torch.Generator().manual_seed(14)
    m = torch.rand(1, 1, 14, 14, generator=g, dtype=torch.float32) * 4 - 1
    up = torch.nn.functional.interpolate(m, scale_factor=16, mode="bilinear", align_corners=False)
    np.save(os.path.join(OUT, "upsample_14x14.npy"), m[0, 0].numpy())
    np.save(os.path.join(OUT, "upsample_14x14_224.npy"), up[0, 0].numpy())
    # A non-integer factor and a non-square map (the general path): 5x7 -> 12x30.
    m2 = torch.rand(1, 1, 5, 7, generator=g, dtype=torch.float32)
    up2 = torch.nn.functional.interpolate(m2, size=(12, 30), mode="bilinear", align_corners=False)
    manifest["upsample_small"] = {"in": m2[0, 0].flatten().tolist(), "in_h": 5, "in_w": 7, "out_h": 12, "out_w": 30,
                                  "out": up2[0, 0].flatten().tolist()}

    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, p)) for p in os.listdir(OUT))
    print(f"total {total / 1024:.0f} KiB in {OUT}")


if __name__ == "__main__":
    main()

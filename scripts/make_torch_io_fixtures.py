#!/usr/bin/env python3
"""Writes the torch.save fixtures of tests/io/test_torch_zip.cpp into tests/data/torch/.

Run with a Python that has PyTorch (Debian's: /usr/bin/python3 scripts/make_torch_io_fixtures.py). Every file is
tiny. expected.json records, for each fixture and tensor, what the C++ loader must return: dtype, shape, stride,
storage offset, the storage it shares with other tensors, and all values converted to float.

The malicious fixture (evil_os_system.pt) is written byte by byte: its pickle names os.system, but nothing here
ever unpickles it or calls anything.
"""
import argparse
import collections
import io
import json
import os
import struct
import zipfile

import torch

try:
    import numpy as np
except ImportError:  # numpy only adds the metric scalar of the Vim-like checkpoint
    np = None

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "torch")

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def basic_state_dict():
    g = torch.Generator().manual_seed(1234)
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(2, 3, generator=g)
    sd["f16"] = torch.randn(4, generator=g).half()
    sd["bf16"] = torch.randn(3, generator=g).bfloat16()
    sd["f64"] = torch.randn(2, 2, generator=g).double()
    sd["i64"] = torch.tensor([-3, 0, 7, 1 << 40, -(1 << 33)], dtype=torch.int64)
    sd["i32"] = torch.tensor([5, -6], dtype=torch.int32)
    sd["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    # Tied weights as state_dict() emits them: two tensor objects over one storage.
    emb = torch.randn(4, 3, generator=g)
    sd["emb.weight"] = emb.detach()
    sd["head.weight"] = emb.detach()
    # The same tensor object twice (the pickle memo refers back to it).
    sd["f32_again"] = sd["f32"]
    # Saved views keep their whole storage: a transpose, and a slice with a storage offset.
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd["transposed"] = base.t()
    base2 = torch.arange(100, 112, dtype=torch.float32).reshape(3, 4)
    sd["sliced"] = base2[1:, 1:3]
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 4)
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=g))
    return sd


def vim_like_checkpoint():
    g = torch.Generator().manual_seed(77)
    model = collections.OrderedDict()
    model["cls_token"] = torch.randn(1, 1, 4, generator=g)
    model["pos_embed"] = torch.randn(1, 3, 4, generator=g)
    model["layers.0.mixer.A_log"] = torch.randn(8, 2, generator=g)
    model["layers.0.mixer.D"] = torch.ones(8)
    model["head.weight"] = torch.randn(3, 4, generator=g)
    model["head.bias"] = torch.zeros(3)
    # A real optimizer state after one step: int keys, tensors, lists, tuples, floats, bools, None.
    params = [torch.nn.Parameter(t.clone()) for t in (model["head.weight"], model["head.bias"])]
    opt = torch.optim.AdamW(params, lr=1e-3)
    (params[0].sum() + params[1].sum()).backward()
    opt.step()
    ckpt = {
        "model": model,
        "optimizer": opt.state_dict(),
        "lr_scheduler": {"base_lrs": [1e-3], "last_epoch": 3, "_step_count": 4, "verbose": False},
        "epoch": 3,
        "args": argparse.Namespace(model="vim_tiny_patch16_224", batch_size=128, lr=5e-4, drop_path=0.05,
                                   mean=(0.485, 0.456, 0.406), resume="", eval=False, seed=0, device="cuda",
                                   input_size=224, smoothing=None),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                   "_growth_tracker": 0},
    }
    if np is not None:
        ckpt["max_accuracy"] = np.float64(76.125)
    return ckpt


def tensor_record(t, storage_ids):
    t = t.detach()
    key = t.storage().data_ptr()
    if key not in storage_ids:
        storage_ids[key] = len(storage_ids)
    return {
        "dtype": DTYPE_NAMES[t.dtype],
        "shape": list(t.shape),
        "stride": list(t.stride()),
        "offset": t.storage_offset(),
        "storage": storage_ids[key],
        "values": [float(v) for v in t.double().flatten().tolist()],
    }


def state_dict_record(sd):
    ids = {}
    return {name: tensor_record(t, ids) for name, t in sd.items() if isinstance(t, torch.Tensor)}


def save(obj, name, **kw):
    path = os.path.join(OUT, name)
    torch.save(obj, path, **kw)
    return path


def write_zip(name, members):
    """A zip of STORED members (the torch layout), written by Python's zipfile."""
    with zipfile.ZipFile(os.path.join(OUT, name), "w", compression=zipfile.ZIP_STORED) as z:
        for member, data in members:
            z.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), data)  # reproducible bytes


def evil_pickle():
    # PROTO 2; GLOBAL 'os system'; SHORT_BINUNICODE 'echo pwned'; TUPLE1; REDUCE; STOP — written as bytes only.
    arg = b"echo pwned"
    return b"\x80\x02" + b"cos\nsystem\n" + b"\x8c" + bytes([len(arg)]) + arg + b"\x85" + b"R" + b"."


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    sd = basic_state_dict()
    save(sd, "state_dict.pt")
    expected["state_dict.pt"] = state_dict_record(sd)
    # The same state dict with the opcodes of protocols 1 (no NEWTRUE/FRAME) and 4 (STACK_GLOBAL, MEMOIZE, FRAME).
    save(sd, "state_dict_p1.pt", pickle_protocol=1)
    expected["state_dict_p1.pt"] = expected["state_dict.pt"]
    save(sd, "state_dict_p4.pt", pickle_protocol=4)
    expected["state_dict_p4.pt"] = expected["state_dict.pt"]

    # A real nn.Module state dict: an OrderedDict whose _metadata attribute is pickled as BUILD state.
    torch.manual_seed(5)
    module_sd = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2), torch.nn.BatchNorm1d(2)).state_dict()
    save(module_sd, "module_state_dict.pt")
    expected["module_state_dict.pt"] = state_dict_record(module_sd)

    ckpt = vim_like_checkpoint()
    save(ckpt, "vim_like.pth")
    expected["vim_like.pth"] = state_dict_record(ckpt["model"])

    # Legacy (torch < 1.6) serialization.
    save({"w": torch.ones(2)}, "legacy.pt", _use_new_zipfile_serialization=False)

    # A pickle that would run os.system("echo pwned") under pickle.load, in a valid torch zip layout.
    write_zip("evil_os_system.pt", [("archive/data.pkl", evil_pickle()), ("archive/version", b"3\n")])

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"torch_version": torch.__version__, "numpy": np is not None, "files": expected}, f, indent=1)
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, name)):8d}  {name}")


if __name__ == "__main__":
    main()

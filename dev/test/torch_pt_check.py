#!/usr/bin/env python3
"""torch_pt_check.py — the real torch's side of llmc/torch_pt.h's tests (dev/test/test_torch_pt.h).

  torch_pt_check.py write PATH [EXPECTED.json]   torch.save a dict of two state dicts to PATH and describe
                                                 every tensor in EXPECTED.json (default PATH.json)
  torch_pt_check.py check PATH EXPECTED.json     torch.load(PATH, weights_only=True) a file the C side wrote
                                                 and compare every tensor with EXPECTED.json, bit for bit

EXPECTED.json: {"tensors": [{"group", "name", "dtype": "BF16"|"F32"|"F16"|"F64", "shape": [...],
"hex": the tensor's bytes, little-endian, row-major}, ...]} in dict order (groups, then tensors).
Values are arbitrary bit patterns (NaNs with payloads, infinities, subnormals included), so "equal"
means equal bytes. Prints one line and exits 0 when all is well, 1 otherwise.
Needs torch (>= 1.13 for weights_only) and the standard library; run it with /usr/bin/python3.
"""
import collections
import json
import sys

import torch

DTYPES = {"BF16": torch.bfloat16, "F32": torch.float32, "F16": torch.float16, "F64": torch.float64}
NAMES = {v: k for k, v in DTYPES.items()}
INTS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def tensor_bytes(t):
    return bytes(t.contiguous().reshape(-1).view(torch.uint8).tolist())


def pattern(j, shape, dtype):
    """A tensor of shape/dtype whose element k has the bits of a hash of (j, k)."""
    size = torch.empty((), dtype=dtype).element_size()
    n = 1
    for s in shape:
        n *= s
    bits = 8 * size
    vals = []
    for k in range(n):
        v = ((j + 1) * 0x9E3779B97F4A7C15 + k * 0xC2B2AE3D27D4EB4F + (k >> 3) * 0x165667B1) % (1 << 64)
        v = (v ^ (v >> 29)) % (1 << bits)
        vals.append(v - (1 << bits) if v >= 1 << (bits - 1) else v)
    return torch.tensor(vals, dtype=INTS[size]).view(dtype).reshape(shape)


class Adapter(torch.nn.Module):
    """Shaped like the reference's CoDA adapter, plus the cases a reader must get right."""

    def __init__(self, layer):
        super().__init__()
        j = 100 * layer
        self.q_proj = torch.nn.Linear(8, 4, bias=False)
        self.q_proj.weight.data = pattern(j + 1, (4, 8), torch.bfloat16)
        self.lambda_proj = torch.nn.Linear(16, 1)
        self.lambda_proj.weight.data = pattern(j + 2, (1, 16), torch.float32)    # [1, 16]
        self.lambda_proj.bias.data = pattern(j + 3, (1,), torch.float32)
        self.theta = torch.nn.Parameter(pattern(j + 4, (3,), torch.float32))       # [3]
        self.register_buffer("cube", pattern(j + 5, (2, 3, 2), torch.bfloat16))
        self.register_buffer("quad", pattern(j + 6, (2, 1, 3, 2), torch.float32))
        self.register_buffer("scale", pattern(j + 7, (), torch.float32))           # 0-dim
        base = pattern(j + 8, (12,), torch.float32)                                 # one storage, two views
        self.register_buffer("view_a", base[2:6])
        self.register_buffer("view_b", base[6:12].view(2, 3))
        if layer == 0:
            self.register_buffer("h16", pattern(j + 9, (5,), torch.float16))
            self.register_buffer("f64", pattern(j + 10, (2, 2), torch.float64))


class Layer(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.coda = Adapter(layer)


def describe(obj):
    out = []
    for g, sd in obj.items():
        for n, t in sd.items():
            out.append({"group": g, "name": n, "dtype": NAMES[t.dtype], "shape": list(t.shape), "hex": tensor_bytes(t).hex()})
    return out


def compare(obj, expected):
    """None when obj holds exactly the expected tensors (in order, bitwise), else what differs."""
    if not isinstance(obj, dict):
        return f"top-level object is a {type(obj).__name__}"
    got = [(g, n) for g, sd in obj.items() for n in (sd.keys() if isinstance(sd, dict) else ["<not a dict>"])]
    want = [(e["group"], e["name"]) for e in expected]
    if got != want:
        return f"keys differ: got {got[:6]}..., expected {want[:6]}..."
    for e in expected:
        t = obj[e["group"]][e["name"]]
        what = f"{e['group']}/{e['name']}"
        if not isinstance(t, torch.Tensor):
            return f"{what} is a {type(t).__name__}"
        if t.dtype != DTYPES[e["dtype"]] or list(t.shape) != e["shape"]:
            return f"{what}: {t.dtype} {list(t.shape)}, expected {e['dtype']} {e['shape']}"
        if not t.is_contiguous():
            return f"{what} is not contiguous"
        if tensor_bytes(t).hex() != e["hex"]:
            return f"{what}: bytes differ"
    return None


def main(argv):
    if len(argv) < 3 or argv[1] not in ("write", "check") or (argv[1] == "check" and len(argv) != 4):
        print(__doc__.strip().split("\n\n")[0], file=sys.stderr)
        return 2
    path = argv[2]
    if argv[1] == "write":
        obj = {"layer_0": Layer(0).state_dict(), "layer_1": Layer(1).state_dict()}
        assert isinstance(obj["layer_0"], collections.OrderedDict)
        sd = obj["layer_0"]
        assert sd["coda.view_a"].storage().data_ptr() == sd["coda.view_b"].storage().data_ptr(), "views must share a storage"
        torch.save(obj, path)
        expected = describe(obj)
        back = torch.load(path, weights_only=True)
        problem = compare(back, expected)
        if problem:
            print(f"torch {torch.__version__}: its own file does not read back: {problem}")
            return 1
        out = argv[3] if len(argv) > 3 else path + ".json"
        with open(out, "w") as f:
            json.dump({"torch": torch.__version__, "tensors": expected}, f, indent=1)
        print(f"torch {torch.__version__}: wrote {path} ({len(expected)} tensors in {len(obj)} groups) and {out}")
        return 0
    with open(argv[3]) as f:
        expected = json.load(f)["tensors"]
    try:
        obj = torch.load(path, weights_only=True)
    except Exception as e:  # what torch says is the result
        print(f"torch {torch.__version__}: torch.load(weights_only=True) failed: {type(e).__name__}: {e}")
        return 1
    problem = compare(obj, expected)
    if problem:
        print(f"torch {torch.__version__}: {path}: {problem}")
        return 1
    groups = len({e["group"] for e in expected})
    print(f"torch {torch.__version__}: {path}: {len(expected)} tensors in {groups} groups bitwise equal")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

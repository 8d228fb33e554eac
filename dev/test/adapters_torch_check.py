"""coda_adapters against real torch (run by dev/test/test_adapters.h when /usr/bin/python3 has torch).

usage: adapters_torch_check.py EXPORTED.pt EXPORTED.safetensors REFERENCE_OUT.pt EXPECTED_OUT.safetensors

1. torch.load(EXPORTED.pt, weights_only=True) gives {"layer_i": {name: tensor}}, every tensor bitwise
   equal to the same key of EXPORTED.safetensors (coda.c's other export of the same checkpoint; read
   here by hand: 8-byte header length, JSON header, data);
2. the reference's Quick Start works: a module carrying the reference's parameter names (nested
   modules built from the dotted keys) takes adapter.load_state_dict(state[f"layer_{i}"], strict=True);
3. writes what the reference itself would write after training: torch.save of {"layer_i":
   module.state_dict()} (OrderedDicts with _metadata) with every value changed (x * 2 + 0.5 in the
   tensor's dtype) as REFERENCE_OUT.pt, and the same values as EXPECTED_OUT.safetensors for the C
   side to compare against after it imports REFERENCE_OUT.pt.
Prints "ok ..." and exits 0, or raises."""
import json, struct, sys
import torch

DT = {"BF16": torch.bfloat16, "F32": torch.float32}
DT_NAME = {torch.bfloat16: "BF16", torch.float32: "F32"}

def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = (v["dtype"], v["shape"], data[a:b])
    return out

def tensor_bytes(t):
    t = t.contiguous()
    return t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()

def write_safetensors(path, tensors):
    header, blobs, at = {}, [], 0
    for k, t in tensors.items():
        b = tensor_bytes(t)
        header[k] = {"dtype": DT_NAME[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

class Adapter(torch.nn.Module):
    """A module whose state_dict keys are exactly `names` (e.g. coda.q_proj.weight), as the reference's adapter."""
    def __init__(self, state):
        super().__init__()
        for name, t in state.items():
            mod = self
            *path, leaf = name.split(".")
            for p in path:
                if not hasattr(mod, p):
                    mod.add_module(p, torch.nn.Module())
                mod = getattr(mod, p)
            mod.register_parameter(leaf, torch.nn.Parameter(torch.zeros(t.shape, dtype=t.dtype), requires_grad=False))

def main():
    pt, sf, ref_out, expected_out = sys.argv[1:5]
    state = torch.load(pt, weights_only=True)
    flat = read_safetensors(sf)
    n = 0
    for group, tensors in state.items():
        for name, t in tensors.items():
            dtype, shape, b = flat[f"{group}.{name}"]
            assert DT[dtype] == t.dtype and list(t.shape) == shape, (group, name, t.dtype, t.shape, dtype, shape)
            assert tensor_bytes(t) == b, f"{group}.{name}: values differ between the .pt and the .safetensors"
            n += 1
    assert n == len(flat), (n, len(flat))
    changed, expected = {}, {}
    for group in sorted(state, key=lambda g: int(g.split("_")[1])):
        adapter = Adapter(state[group])
        adapter.load_state_dict(state[group], strict=True)  # the Quick Start
        with torch.no_grad():
            for name, p in adapter.named_parameters():
                p.copy_((p.float() * 2 + 0.5).to(p.dtype))
                expected[f"{group}.{name}"] = p.detach().clone()
        changed[group] = adapter.state_dict()
    torch.save(changed, ref_out)
    write_safetensors(expected_out, expected)
    print(f"ok: torch {torch.__version__} loaded {n} tensors of {len(state)} layers with weights_only=True, bitwise equal to the "
          f"safetensors export; load_state_dict(strict=True) took every layer; wrote the reference-style {ref_out}")

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a random Mistral model with Hugging Face transformers' save_pretrained, plus the logits and
loss transformers computes on a fixed random batch, for coda.c's parity test (test_coda: gpu_hf_parity).

    python3 scripts/hf_parity.py --shape tiny --dtype float32 --out data/hf_parity/tiny_fp32
    python3 scripts/hf_parity.py --shape mistral-7b --dtype bfloat16 --layers 8 --batch 1 --seq 128 --out DIR

Writes OUT/config.json, OUT/model*.safetensors (+ index when sharded) and OUT/parity.bin, little-endian:
    int32 B, T, V; int32 tokens [B*T]; float32 logits [B*T*V]; float64 loss
(loss = mean over the B*(T-1) shifted targets, as MistralForCausalLM computes it with labels=input_ids),
and then (format version 2; files without it, from older versions, still load):
    int32 2; float32 logits [B*T*V]; float64 loss
of the *same* weights one precision up, run by transformers with TF32 off: the "truth" (fp32 for a
bf16 model, fp64 for an fp32 model) that tells how far each implementation (transformers', coda.c's)
is from exact arithmetic. The rotary inv_freq buffer stays fp32 in the bf16 model (keep_rope_fp32), as
from_pretrained gives it. --layers overrides the shape's layer count (depth sweeps). --dump-acts
(bfloat16 only) also writes OUT/acts.bin: every layer's intermediate activations from the bf16 run and
from the fp32 truth (see write_acts), for gpu_hf_parity's per-op error table. Peak GPU memory at the
Mistral-7B shape (32 layers): about 30 GB for bf16 (the fp32 init is cast to bf16 and, after saving,
back to fp32, in place parameter by parameter), about 60 GB for fp32 (its fp64 truth). Needs torch +
transformers (the GPU machine has them; they are not coda.c dependencies); write_parity() needs only numpy."""
import argparse, os, struct, time
import numpy as np

SHAPES = {  # hidden, intermediate, layers, heads, kv_heads, vocab
    "tiny": dict(hidden_size=256, intermediate_size=640, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1031),  # head_dim 64: the GPU attention takes 64 or 128
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32768),
}
TRUTH_VERSION = 2  # the int32 that announces the truth section at the end of parity.bin
ACTS_MAGIC, ACTS_VERSION, ACTS_NAME = b"CODAACTS", 1, 32
# per layer, in forward order: name -> (module path under the decoder layer, hook kind); "in" = the
# module's first input, "out" = its output
LAYER_ACTS = [("resid_in", "input_layernorm", "in"), ("attn_norm", "input_layernorm", "out"),
              ("q_pre_rope", "self_attn.q_proj", "out"), ("k_pre_rope", "self_attn.k_proj", "out"),
              ("v", "self_attn.v_proj", "out"), ("attn_pre_o", "self_attn.o_proj", "in"),
              ("resid_mid", "post_attention_layernorm", "in"), ("mlp_norm", "post_attention_layernorm", "out"),
              ("gate", "mlp.gate_proj", "out"), ("up", "mlp.up_proj", "out"), ("mlp_act", "mlp.down_proj", "in"),
              ("resid_out", "", "out")]

def write_parity(path, tokens, logits, loss, truth_logits=None, truth_loss=None):
    """tokens [B, T] ints, logits [B, T, V] floats (numpy); the truth pair is optional (None = absent)."""
    B, T, V = logits.shape
    assert tokens.shape == (B, T)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<iii", B, T, V))
        f.write(np.ascontiguousarray(tokens, dtype="<i4").tobytes())
        f.write(np.ascontiguousarray(logits, dtype="<f4").tobytes())
        f.write(struct.pack("<d", float(loss)))
        if truth_logits is not None:
            assert truth_logits.shape == (B, T, V)
            f.write(struct.pack("<i", TRUTH_VERSION))
            f.write(np.ascontiguousarray(truth_logits, dtype="<f4").tobytes())
            f.write(struct.pack("<d", float(truth_loss)))
    os.replace(path + ".tmp", path)  # no half-written parity.bin if the run dies

def write_acts(path, names, acts, truth):
    """acts.bin, little-endian: char[8] "CODAACTS"; int32 version 1; int32 count; then count entries of
    char[32] name (NUL-padded, at most 31 bytes); int64 n; float32 [n] run in the model's dtype (bf16);
    float32 [n] fp32 truth. acts/truth: dicts name -> numpy array (flattened [B*T, width], row-major)."""
    with open(path + ".tmp", "wb") as f:
        f.write(ACTS_MAGIC + struct.pack("<ii", ACTS_VERSION, len(names)))
        for name in names:
            a, t = np.ravel(acts[name]), np.ravel(truth[name])
            nb = name.encode()
            assert len(nb) < ACTS_NAME and a.size == t.size and a.size > 0, name
            f.write(nb.ljust(ACTS_NAME, b"\0") + struct.pack("<q", a.size))
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
            f.write(np.ascontiguousarray(t, dtype="<f4").tobytes())
    os.replace(path + ".tmp", path)

def hook_acts(model, store):
    """Forward hooks that copy every LAYER_ACTS activation and the final norm's output, as fp32 on the
    CPU, into store["current"] (a dict the caller swaps between runs). Returns (names in order, handles)."""
    def grab(name, kind):
        def pre(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            store["current"][name] = x.detach().float().cpu().numpy().reshape(-1)
        def post(mod, args, out):
            x = out[0] if isinstance(out, (tuple, list)) else out
            store["current"][name] = x.detach().float().cpu().numpy().reshape(-1)
        return ("in", pre) if kind == "in" else ("out", post)
    names, handles = [], []
    for l, layer in enumerate(model.model.layers):
        for short, path, kind in LAYER_ACTS:
            mod = layer.get_submodule(path) if path else layer
            name = f"L{l}.{short}"
            k, fn = grab(name, kind)
            handles.append(mod.register_forward_pre_hook(fn, with_kwargs=True) if k == "in" else mod.register_forward_hook(fn))
            names.append(name)
    k, fn = grab("final_norm", "out")
    handles.append(model.model.norm.register_forward_hook(fn))
    names.append("final_norm")
    return names, handles

def keep_rope_fp32(model, dtype):
    """model.to(bfloat16) also casts the rotary embedding's inv_freq buffer to bf16 (up to 2^-9 relative
    error in every RoPE frequency: 0.25 rad of angle at position 127 for the fastest one), which
    from_pretrained(..., dtype=torch.bfloat16) -- how users load Mistral -- does not do: it keeps the
    fp32 buffer. Cast the weights, then put the fp32 frequencies back, so the reference (and the fp32
    truth derived from it) is the model users run, not an artifact of this script."""
    import torch
    freqs = {n: b.detach().clone() for n, b in model.named_buffers() if n.endswith("inv_freq")}
    model.to(dtype)
    for name, fp32 in freqs.items():
        mod = model.get_submodule(name.rsplit(".", 1)[0])
        setattr(mod, name.rsplit(".", 1)[1], fp32)
    assert all(b.dtype == torch.float32 for n, b in model.named_buffers() if n.endswith("inv_freq"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=None, help="override the shape's num_hidden_layers")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump-acts", action="store_true",
                    help="also write OUT/acts.bin: per-layer activations of the bf16 run and the fp32 truth (bfloat16 only)")
    a = ap.parse_args()
    if a.dump_acts and a.dtype != "bfloat16":
        ap.error("--dump-acts needs --dtype bfloat16 (it compares the bf16 run with the fp32 truth)")
    import torch
    from transformers import MistralConfig, MistralForCausalLM
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = False  # the FP32 comparison (and the fp32 truth) must be true fp32
    torch.backends.cudnn.allow_tf32 = False
    dtype = getattr(torch, a.dtype)
    shape = dict(SHAPES[a.shape])
    if a.layers is not None:
        assert a.layers >= 1, "--layers must be >= 1"
        shape["num_hidden_layers"] = a.layers
    cfg = MistralConfig(**shape, rope_theta=1e6, rms_norm_eps=1e-5, max_position_embeddings=32768,
                        tie_word_embeddings=False, sliding_window=None, attn_implementation="sdpa")
    t0 = time.time()
    with torch.device("cuda"):
        model = MistralForCausalLM(cfg)
        keep_rope_fp32(model, dtype)
    torch.cuda.empty_cache()
    model.eval()
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device="cuda")
    store = {"current": {}}
    act_names, hooks = hook_acts(model, store) if a.dump_acts else ([], [])
    acts_bf16 = store["current"]
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids, use_cache=False)
    logits, loss = out.logits.float().cpu().numpy(), out.loss.item()
    del out
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    # The truth: the same weights one precision up (bf16 model -> fp32, fp32 model -> fp64), so the
    # test can tell how far each implementation (transformers', coda.c's) is from exact arithmetic.
    model.float() if dtype != torch.float32 else model.double()  # in place: the lower-precision copy is freed as it goes
    torch.cuda.empty_cache()
    store["current"] = {}
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids, use_cache=False)
    truth_logits, truth_loss = out.logits.float().cpu().numpy(), out.loss.item()
    del out
    write_parity(os.path.join(a.out, "parity.bin"), ids.cpu().numpy(), logits, loss, truth_logits, truth_loss)
    if a.dump_acts:
        for h in hooks: h.remove()
        acts_truth = store["current"]
        missing = [n for n in act_names if n not in acts_bf16 or n not in acts_truth]
        assert not missing, f"hooks did not fire for {missing[:4]}"
        write_acts(os.path.join(a.out, "acts.bin"), act_names, acts_bf16, acts_truth)
        print(f"acts.bin: {len(act_names)} activations -> {a.out}/acts.bin")
    truth = "" if truth_loss is None else f", {'fp32' if dtype != torch.float32 else 'fp64'} truth loss {truth_loss:.6f}"
    print(f"{a.shape} {a.dtype} {cfg.num_hidden_layers} layers: loss {loss:.6f}{truth}, {time.time() - t0:.1f}s, "
          f"peak GPU {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB -> {a.out}")

if __name__ == "__main__":
    main()

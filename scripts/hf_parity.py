#!/usr/bin/env python3
"""Writes a random Mistral model with Hugging Face transformers' save_pretrained, plus the logits and
loss transformers computes on a fixed random batch, for coda.c's parity test (test_coda: gpu_hf_parity).

    python3 scripts/hf_parity.py --shape tiny --dtype float32 --out data/hf_parity/tiny_fp32
    python3 scripts/hf_parity.py --shape mistral-7b --dtype bfloat16 --layers 8 --batch 1 --seq 128 --out DIR

Writes OUT/config.json, OUT/model*.safetensors (+ index when sharded) and OUT/parity.bin, little-endian:
    int32 B, T, V; int32 tokens [B*T]; float32 logits [B*T*V]; float64 loss
(loss = mean over the B*(T-1) shifted targets, as MistralForCausalLM computes it with labels=input_ids),
and for a bfloat16 model then also (format version 2; files without it, from older versions, still load):
    int32 2; float32 logits [B*T*V]; float64 loss
of the *same* bf16 weights upcast to float32 and run by transformers in fp32 with TF32 off: the "fp32
truth" that tells how far each bf16 implementation (transformers', coda.c's) is from exact arithmetic.
--layers overrides the shape's layer count (depth sweeps). Peak GPU memory at the Mistral-7B shape
(32 layers) is about 30 GB: the fp32 init (29 GB) is cast to bf16 and, after saving, back to fp32 for the
truth, both in place parameter by parameter, so only one copy of the model lives at a time. Needs torch + transformers (the GPU machine has them; they are not
coda.c dependencies); write_parity() needs only numpy."""
import argparse, os, struct, time
import numpy as np

SHAPES = {  # hidden, intermediate, layers, heads, kv_heads, vocab
    "tiny": dict(hidden_size=256, intermediate_size=640, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1031),  # head_dim 64: the GPU attention takes 64 or 128
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32768),
}
TRUTH_VERSION = 2  # the int32 that announces the fp32-truth section at the end of parity.bin

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

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=None, help="override the shape's num_hidden_layers")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
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
        model = MistralForCausalLM(cfg).to(dtype)
    torch.cuda.empty_cache()
    model.eval()
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device="cuda")
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids, use_cache=False)
    logits, loss = out.logits.float().cpu().numpy(), out.loss.item()
    del out
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    truth_logits = truth_loss = None
    if dtype != torch.float32:
        model.float()  # in place, parameter by parameter: the bf16 copy is freed as it goes
        torch.cuda.empty_cache()
        with torch.no_grad():
            out = model(input_ids=ids, labels=ids, use_cache=False)
        truth_logits, truth_loss = out.logits.float().cpu().numpy(), out.loss.item()
        del out
    write_parity(os.path.join(a.out, "parity.bin"), ids.cpu().numpy(), logits, loss, truth_logits, truth_loss)
    truth = "" if truth_loss is None else f", fp32 truth loss {truth_loss:.6f}"
    print(f"{a.shape} {a.dtype} {cfg.num_hidden_layers} layers: loss {loss:.6f}{truth}, {time.time() - t0:.1f}s, "
          f"peak GPU {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB -> {a.out}")

if __name__ == "__main__":
    main()

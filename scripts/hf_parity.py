#!/usr/bin/env python3
"""Writes a random Mistral model with Hugging Face transformers' save_pretrained, plus the logits and
loss transformers computes on a fixed random batch, for coda.c's parity test (test_coda: gpu_hf_parity).

    python3 scripts/hf_parity.py --shape tiny --dtype float32 --out data/hf_parity/tiny_fp32

Writes OUT/config.json, OUT/model*.safetensors (+ index when sharded) and OUT/parity.bin:
int32 B, T, V, then int32 tokens [B*T], float32 logits [B*T*V], float64 loss (mean over the B*(T-1)
shifted targets, as MistralForCausalLM computes it with labels=input_ids). Needs torch + transformers
(the GPU machine has them; they are not coda.c dependencies)."""
import argparse, os, struct, time
import torch
from transformers import MistralConfig, MistralForCausalLM

SHAPES = {  # hidden, intermediate, layers, heads, kv_heads, vocab
    "tiny": dict(hidden_size=256, intermediate_size=640, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1031),  # head_dim 64: the GPU attention takes 64 or 128
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32768),
}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = False  # the FP32 comparison must be true fp32
    torch.backends.cudnn.allow_tf32 = False
    dtype = getattr(torch, a.dtype)
    cfg = MistralConfig(**SHAPES[a.shape], rope_theta=1e6, rms_norm_eps=1e-5, max_position_embeddings=32768,
                        tie_word_embeddings=False, sliding_window=None, attn_implementation="sdpa")
    t0 = time.time()
    with torch.device("cuda"):
        model = MistralForCausalLM(cfg).to(dtype)
    model.eval()
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device="cuda")
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    with open(os.path.join(a.out, "parity.bin"), "wb") as f:
        f.write(struct.pack("<iii", a.batch, a.seq, cfg.vocab_size))
        f.write(ids.to(torch.int32).cpu().numpy().tobytes())
        f.write(out.logits.float().cpu().numpy().tobytes())
        f.write(struct.pack("<d", out.loss.item()))
    print(f"{a.shape} {a.dtype}: loss {out.loss.item():.6f}, {time.time() - t0:.1f}s -> {a.out}")

if __name__ == "__main__":
    main()

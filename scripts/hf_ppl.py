#!/usr/bin/env python3
"""Hugging Face transformers' sliding-window perplexity (the recipe of its perplexity guide, as the
paper's eval_llm.py uses it; docs/protocol.md §3.1) of a Mistral directory on a coda.c token shard,
for comparison with `infer_coda --ppl SHARD --procedure sliding` on the same directory:

    python3 scripts/hf_ppl.py --model DIR --shard data/shards/brown_val.bin --ctx 256 --stride 64 --max-tokens 4096

Windows [b, min(b + ctx, n)) for b = 0, stride, ...; a window scores the targets at positions
[max(previous end, b + 1), end), as transformers does by masking the first ctx - trg_len labels; the
NLL is summed exactly (float64 sum of per-token cross-entropies of fp32 logits), not as loss * trg_len.
Prints one JSON line: tokens, scored, nll_sum, mean_nll, ppl, windows. Needs torch + transformers
(the GPU machine has them; they are not coda.c dependencies).

    python3 scripts/hf_ppl.py --write-random-shard FILE --vocab V --n N [--seed S]
writes a coda.c token shard of N uniformly random ids < V (for random models whose vocabulary is
smaller than a real tokenizer's); needs only numpy.

    python3 scripts/hf_ppl.py --write-random-model DIR --shape mistral-7b [--seed S]
writes a random Mistral (bf16) with save_pretrained, initialised on the GPU (seconds, not minutes).
The perplexity run reloads it with from_pretrained, which keeps the rotary frequencies in fp32."""
import argparse, json, struct, sys, time
import numpy as np

SHAPES = {  # hidden, intermediate, layers, heads, kv_heads, vocab (as scripts/hf_parity.py)
    "tiny": dict(hidden_size=256, intermediate_size=640, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1031),
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32768),
}

def write_random_model(path, shape, seed):
    import torch
    from transformers import MistralConfig, MistralForCausalLM
    torch.manual_seed(seed)
    cfg = MistralConfig(**SHAPES[shape], head_dim=SHAPES[shape]["hidden_size"] // SHAPES[shape]["num_attention_heads"],
                        max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False, sliding_window=None)
    with torch.device("cuda"):
        model = MistralForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)

def read_shard(path, max_tokens):
    with open(path, "rb") as f:
        head = f.read(1024)
        if len(head) < 1024:
            sys.exit(f"{path}: shorter than a shard header")
        ints = struct.unpack("<256i", head)
        if ints[0] != 20261127:
            sys.exit(f"{path}: not a coda.c token shard (magic {ints[0]})")
        n = (ints[3] & 0xFFFFFFFF) | (ints[4] << 32)
        width = ints[5]
        if max_tokens > 0:
            n = min(n, max_tokens)
        data = np.frombuffer(f.read(n * width), dtype="<u2" if width == 2 else "<u4")
    if len(data) != n:
        sys.exit(f"{path}: truncated ({len(data)} of {n} tokens)")
    return data.astype(np.int64)

def write_random_shard(path, vocab, n, seed):
    """The shard layout of llmc/shard.h: 256 int32 header slots, then uint16 (vocab <= 65536) tokens."""
    ids = np.random.default_rng(seed).integers(0, vocab, size=n)
    width = 2 if vocab <= 65536 else 4
    head = [0] * 256
    head[0], head[1], head[2] = 20261127, 1, vocab
    head[3], head[4], head[5], head[6], head[7], head[8] = n & 0xFFFFFFFF, n >> 32, width, -1, -1, 0
    head[9] = 1
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *head))
        f.write(ids.astype("<u2" if width == 2 else "<u4").tobytes())

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--shard")
    ap.add_argument("--write-random-shard")
    ap.add_argument("--write-random-model")
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--vocab", type=int, default=0)
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--stride", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--dtype", default="auto", help="auto (the checkpoint's), float32 or bfloat16")
    a = ap.parse_args()
    if a.write_random_shard:
        if a.vocab < 1 or a.n < 2:
            sys.exit("--write-random-shard needs --vocab V >= 1 and --n N >= 2")
        write_random_shard(a.write_random_shard, a.vocab, a.n, a.seed)
        return
    if a.write_random_model:
        write_random_model(a.write_random_model, a.shape, a.seed)
        return
    if not a.model or not a.shard:
        sys.exit("--model DIR and --shard FILE are required")
    import torch
    from transformers import AutoModelForCausalLM
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}[a.dtype]
    torch.backends.cuda.matmul.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).cuda().eval()
    ids = torch.from_numpy(read_shard(a.shard, a.max_tokens)).cuda()
    n = ids.numel()
    nll, scored, windows, prev_end = 0.0, 0, 0, 0
    torch.cuda.synchronize()
    t0 = time.time()
    with torch.no_grad():
        for b in range(0, n, a.stride):
            e = min(b + a.ctx, n)
            first = max(prev_end, b + 1)  # first scored target position
            if first < e:
                logits = model(ids[b:e].unsqueeze(0)).logits[0].float()  # [e - b, V]
                pred = logits[first - 1 - b: e - 1 - b]                   # rows predicting positions first..e-1
                nll += torch.nn.functional.cross_entropy(pred, ids[first:e], reduction="sum").double().item()
                scored += e - first
                windows += 1
            prev_end = e
            if e == n:
                break
    torch.cuda.synchronize()
    sec = time.time() - t0
    mean = nll / max(scored, 1)
    print(json.dumps({"tokens": n, "scored": scored, "nll_sum": nll, "mean_nll": mean, "ppl": float(np.exp(mean)),
                      "windows": windows, "ctx": a.ctx, "stride": a.stride, "model": a.model, "seconds": sec,
                      "scored_tok_s": scored / sec}))

if __name__ == "__main__":
    main()

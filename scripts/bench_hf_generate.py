#!/usr/bin/env python3
"""Baseline for coda.c's decode benchmark: Hugging Face transformers generating greedily with a plain,
randomly initialised Mistral model (bf16 weights on the GPU, nothing downloaded), batch 1, a random
prompt of each context length; prefill seconds, decode tokens/s, peak GPU memory and KV cache size.

    python3 scripts/bench_hf_generate.py --shape tiny --contexts 256,1024 --new 16
    python3 scripts/bench_hf_generate.py --shape mistral-7b --contexts 2048,8192,32768 --new 64
    python3 scripts/bench_hf_generate.py --shape mistral-7b --static-cache --compile

Per context length and cache: t_short = generate(max_new_tokens=1) (the prefill and its one token),
t_long = generate(max_new_tokens=1+NEW), each the best of --repeats after one warm-up of both;
decode tok/s = NEW / (t_long - t_short), i.e. NEW decode steps with the prefill cancelled out. The
default cache is transformers' DynamicCache (grows by concatenation every step, as users get it);
--static-cache adds cache_implementation="static" with transformers' automatic compilation of the
decode step turned off, --compile adds the static cache with it on (torch.compile, CUDA graphs; the
warm-up pays the compile). kv_cache_bytes = 2 (K, V) * layers * kv_heads * head_dim * (ctx + NEW) * 2
(bf16). A length that runs out of GPU memory (or a static/compiled run that fails) is reported in the
results and skipped. Prints one line per context and cache, then one JSON line. Needs torch +
transformers (the GPU machine has them; they are not coda.c dependencies)."""
import argparse, gc, json, sys, time

SHAPES = {  # mistral-7b as llmc/presets.h (vocab 32768); rope_theta does not change the cost; 131072 positions admit 128K prompts
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, head_dim=128, vocab_size=32768),
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, vocab_size=32000),
}

def build_model(shape, attn, seed):
    """Constructed directly on the GPU in bf16 (no fp32 copy, no CPU init), then every weight drawn
    again from normal(0, 0.02) and every norm set to 1, so the values do not depend on the version's
    init code. The rotary inv_freq buffer is computed explicitly in fp32 by transformers either way."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM
    cfg = MistralConfig(**SHAPES[shape], rope_theta=10000.0, max_position_embeddings=131072, sliding_window=None,
                        tie_word_embeddings=False, attn_implementation=attn)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = MistralForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)  # RMSNorm weights (Mistral has no biases)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.eval(), cfg

def timed_generate(model, ids, n, kw):
    import torch
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, use_cache=True, pad_token_id=0, **kw)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert out.shape[1] == ids.shape[1] + n, f"generated {out.shape[1] - ids.shape[1]} tokens, not {n}"
    return dt

def bench_one(model, ids, new, repeats, kw):
    """One warm-up of each length, then the best of repeats; returns (t_short, t_long)."""
    timed_generate(model, ids, 1, kw)
    timed_generate(model, ids, 1 + new, kw)
    t_short = min(timed_generate(model, ids, 1, kw) for _ in range(repeats))
    t_long = min(timed_generate(model, ids, 1 + new, kw) for _ in range(repeats))
    return t_short, t_long

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=SHAPES, default="mistral-7b")
    ap.add_argument("--contexts", default="2048,8192,32768", help="comma list of prompt lengths")
    ap.add_argument("--new", type=int, default=64, help="decode steps timed (after the prefill's token)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timed runs")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    ap.add_argument("--static-cache", action="store_true", help="also run cache_implementation=static, no compile")
    ap.add_argument("--compile", action="store_true", help="also run the static cache with the decode step compiled")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    contexts = [int(c) for c in a.contexts.split(",") if c.strip()]
    if not contexts or min(contexts) < 1 or a.new < 1 or a.repeats < 1:
        sys.exit("--contexts needs positive lengths; --new and --repeats must be >= 1")
    try:
        import torch, transformers
        from transformers import GenerationConfig
    except ImportError as e:
        sys.exit(f"bench_hf_generate.py needs torch and transformers ({e}); the GPU machine has them")
    if not torch.cuda.is_available():
        sys.exit("bench_hf_generate.py needs a CUDA GPU")
    transformers.logging.set_verbosity_error()  # generate's per-call notices would drown the table
    # Versions with automatic compilation compile the decode step whenever the cache is static (on
    # CUDA); the plain static run must say disable_compile=True. Older versions never auto-compile,
    # so their compiled run compiles the forward itself.
    auto_compile = hasattr(GenerationConfig(), "disable_compile")
    def static(compiled):
        return dict(cache_implementation="static", **({"disable_compile": not compiled} if auto_compile else {}))
    runs = [("dynamic", {})] + [("static", static(False))] * a.static_cache
    runs += [("static+compile", static(True))] * a.compile

    model, cfg = build_model(a.shape, a.attn, a.seed)
    if a.compile and not auto_compile:
        eager_forward = model.forward
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 2
    results = []
    for ctx in contexts:
        g = torch.Generator().manual_seed(a.seed * 1000003 + ctx)
        ids = torch.randint(3, cfg.vocab_size, (1, ctx), generator=g).cuda()  # no pad (0) / bos / eos in it
        for cache, kw in runs:
            if cache == "static+compile" and not auto_compile:
                model.forward = torch.compile(eager_forward, mode="reduce-overhead", fullgraph=True)
            r = {"ctx": ctx, "new": a.new, "cache": cache, "kv_cache_bytes": kv_per_token * (ctx + a.new)}
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            try:
                t_short, t_long = bench_one(model, ids, a.new, a.repeats, kw)
                dec = t_long - t_short
                r.update(prefill_s=t_short, decode_tok_s=a.new / dec if dec > 0 else None,
                         ms_per_token=dec / a.new * 1e3, peak_gib=torch.cuda.max_memory_allocated() / 2**30)
                print(f"HF transformers {a.shape} {a.attn} {cache} ctx {ctx}: prefill {t_short:.3f} s, decode "
                      f"{r['decode_tok_s'] or float('nan'):.1f} tok/s ({r['ms_per_token']:.2f} ms/token over {a.new}), "
                      f"peak {r['peak_gib']:.1f} GiB, KV cache {r['kv_cache_bytes'] / 2**30:.2f} GiB", flush=True)
            except torch.cuda.OutOfMemoryError as e:
                r["error"] = "out of memory: " + str(e).split("\n")[0][:200]
            except Exception as e:  # a static / compiled run that this version cannot do: report, go on
                if cache == "dynamic":
                    raise
                r["error"] = f"{type(e).__name__}: " + str(e).split("\n")[0][:200]
            if "error" in r:
                print(f"HF transformers {a.shape} {a.attn} {cache} ctx {ctx}: skipped ({r['error']})", flush=True)
            if cache == "static+compile" and not auto_compile:
                model.forward = eager_forward
            results.append(r)
    print(json.dumps({"what": "hf_generate", "shape": a.shape, "dtype": "bfloat16", "attn": a.attn,
                      "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "transformers": transformers.__version__, "seed": a.seed, "repeats": a.repeats,
                      "results": results}))

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Baseline for train_coda's benchmark: Hugging Face transformers training a plain Mistral model of a
given shape (bf16 weights, SDPA attention, AdamW), random tokens, tokens/s and peak memory.

    python3 scripts/bench_hf_train.py --shape mistral-7b --seq 2048 --batch 1 --trainable attention
    python3 scripts/bench_hf_train.py --shape smollm2-135m --seq 2048 --batch 8 --trainable all

--trainable attention freezes everything but q/k/v/o (as Phase 1 trains the attention adapters);
--grad-ckpt turns on gradient checkpointing; --compile runs the model through torch.compile (its
compilation falls in the warm-up steps, which are not timed). Prints one line: shape, seq, batch, tok/s, ms/step,
peak GiB. Needs torch + transformers (the GPU machine has them; they are not coda.c dependencies)."""
import argparse, time
import torch
from transformers import MistralConfig, MistralForCausalLM
from hf_parity import keep_rope_fp32  # same directory: .to(bf16) would also cast RoPE's inv_freq

SHAPES = {
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32768, tie_word_embeddings=False, rope_theta=1e6),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=1e5),
}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--trainable", choices=["all", "attention"], default="all")
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = MistralConfig(**SHAPES[a.shape], max_position_embeddings=32768, sliding_window=None, attn_implementation="sdpa")
    with torch.device("cuda"):
        model = MistralForCausalLM(cfg)
        keep_rope_fp32(model, torch.bfloat16)  # bf16 weights, fp32 RoPE frequencies, as from_pretrained gives
    if a.trainable == "attention":
        for n, p in model.named_parameters():
            p.requires_grad = ".self_attn." in n
    if a.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    step_model = torch.compile(model) if a.compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            torch.cuda.synchronize()
            t0 = time.time()
        loss = step_model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    dt = (time.time() - t0) / a.steps
    print(f"HF transformers {a.shape} seq {a.seq} batch {a.batch} trainable {a.trainable} grad_ckpt {int(a.grad_ckpt)} compile {int(a.compile)}: "
          f"{a.batch * a.seq / dt:.0f} tok/s, {dt * 1e3:.1f} ms/step, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, "
          f"{torch.cuda.get_device_name()}")

if __name__ == "__main__":
    main()

"""PyTorch's scaled_dot_product_attention at the shapes of coda_attention.cu, the side-by-side baseline.

    python3 dev/cuda/sdpa_baseline.py [reps=20]

Causal, bf16, B = 1, Dh = 128, 8 KV heads (enable_gqa), forward and forward + backward, median ms over
`reps` timed runs after warm-up, per backend (cuDNN, flash = FlashAttention-2) that this torch offers:
- "one stream": 32 query heads, the work of one attention stream (GQA, or each CoDA stream);
- "two streams": 64 query heads over the same 8 KV heads, the work of CoDA's two streams in one call
  (CoDA's noise query is a rotation of the signal query: for the kernel, twice the query heads).
TFLOP/s counted as coda_attention.cu counts them (forward 4 * Dh per visible pair, backward 2.5x).
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| backend | T | query heads | fwd ms | fwd+bwd ms | bwd ms | fwd TFLOP/s | bwd TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    backends = [("cuDNN", SDPBackend.CUDNN_ATTENTION), ("flash (FA2)", SDPBackend.FLASH_ATTENTION)]
    for T in (2048, 8192):
        for H in (32, 64):
            q = torch.randn(1, H, T, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            k = torch.randn(1, 8, T, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            v = torch.randn(1, 8, T, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            do = torch.randn(1, H, T, 128, device="cuda", dtype=torch.bfloat16)
            pairs = H * T * (T + 1) / 2
            ffl = 4.0 * 128 * pairs
            for name, be in backends:
                try:
                    with sdpa_kernel([be]):
                        fwd = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), reps)

                        def fb():
                            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                            o.backward(do)

                        both = median_ms(fb, reps)
                except RuntimeError as e:
                    print(f"| {name} | {T} | {H} | not available: {str(e).splitlines()[0][:60]} | | | | |")
                    continue
                bwd = both - fwd
                print(f"| {name} | {T} | {H} | {fwd:.3f} | {both:.3f} | {bwd:.3f} | {ffl / fwd * 1e-9:.1f} | {2.5 * ffl / bwd * 1e-9:.1f} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()

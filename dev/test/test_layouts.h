// test_layouts.h — tiny model configurations that CPU tests (test_cpu.cpp) and GPU tests (test_coda.cu)
// both build. A header of its own because the test headers that use them define TESTs of their own
// build: test_coda.cu cannot include test_zero.h, nor test_cpu.cpp a .cuh.
#pragma once
#include "../../llmc/config.h"

// A tiny bounded CoDA model for the ZeRO / AdamW-table tests (their phase-1 policy freezes the base, so
// the attention adapters are trainable tensors of many sizes with alignment gaps between them).
// odd = 0: d 24, 3 layers, 4 heads over 2; odd = 1: d 25, 4 layers, 3 heads of 6 over 1, so that the
// q/k/o lengths are not multiples of 4 (450, 150) and slice boundaries cut such tensors.
static ModelConfig zero_test_config(int odd) {
    ModelConfig c = config_default();
    c.vocab_size = 50; c.ffn_dim = 40; c.head_dim = 6;
    c.dim = odd ? 25 : 24; c.n_layers = odd ? 4 : 3; c.n_heads = odd ? 3 : 4; c.n_kv_heads = odd ? 1 : 2;
    c.differential = 1; c.bounded = 1; c.window = 8; c.n_exact = 2; c.n_summary = 2;
    return c;
}

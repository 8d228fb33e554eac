// test_config.h — config validation and the data-driven parameter table.
#pragma once
#include <stddef.h>
#include "../../llmc/config.h"
#include "../../llmc/params.h"

TEST(param_table_mistral7b_shapes_and_count) {
    ModelConfig c = config_default();  // Mistral-7B-v0.3 architecture
    c.vocab_size = 32768;
    ParamTable t;
    param_table_build(&t, &c, DT_BF16);
    // 7,248,023,552 parameters in Mistral-7B-v0.3 (HF reports 7.25B)
    CHECK(param_table_count(&t) == 7248023552ull, "count %zu", param_table_count(&t));
    CHECK(t.n == 2 + 32 * 9 + 1, "n %d", t.n);
    const ParamTensor* k = param_find(&t, PK_K, 31);
    CHECK(k && strcmp(k->name, "model.layers.31.self_attn.k_proj.weight") == 0, "%s", k ? k->name : "null");
    CHECK(k && k->shape[0] == 1024 && k->shape[1] == 4096, "");
    CHECK(param_find(&t, PK_THETA, 0) == NULL, "GQA model has no theta");
    CHECK(strcmp(t.tensors[t.n - 1].name, "lm_head.weight") == 0, "");
    // offsets follow table order, aligned, without overlap; the buffer holds them all
    size_t end = 0;
    for (int i = 0; i < t.n; i++) {
        CHECK(t.tensors[i].offset % PARAM_ALIGN_ELEMS == 0 && t.tensors[i].offset >= end, "%s", t.tensors[i].name);
        end = t.tensors[i].offset + t.tensors[i].numel;
    }
    CHECK(end <= t.total && t.total - end < PARAM_ALIGN_ELEMS, "total %zu, last end %zu", t.total, end);
    param_table_free(&t);
}

TEST(param_table_coda_bounded_adds_adapter_tensors) {
    ModelConfig c = config_default();
    c.differential = 1; c.bounded = 1; c.head_norm = HEAD_NORM_FULL;
    ParamTable t;
    param_table_build(&t, &c, DT_F32);
    const ParamTensor* th = param_find(&t, PK_THETA, 3);
    CHECK(th && th->shape[0] == 32 && th->shape[1] == 64, "theta [H, Dh/2]");
    CHECK(param_find(&t, PK_LAMBDA_W, 3)->shape[1] == 4096, "");
    CHECK(param_find(&t, PK_HEAD_NORM, 3)->numel == 128, "");
    CHECK(param_find(&t, PK_WRITE_W, 3)->numel == 4096, "");
    CHECK(param_find(&t, PK_ETA, 3)->numel == 8, "one eta per KV head");
    // Phase-1/2 policy: adapters trainable, base frozen (docs/protocol.md §1.3)
    param_table_set_trainable(&t, TRAIN_ATTENTION);
    CHECK(!param_find(&t, PK_EMBED, 0)->trainable && !param_find(&t, PK_GATE, 5)->trainable, "");
    CHECK(param_find(&t, PK_Q, 5)->trainable && param_find(&t, PK_THETA, 5)->trainable, "");
    c.head_norm = HEAD_NORM_IDENTITY;
    ParamTable t2;
    param_table_build(&t2, &c, DT_F32);
    param_table_set_trainable(&t2, TRAIN_ATTENTION);
    // docs/protocol.md §1.3: Phase-1 trainable = 1,346,438,144 (q/k/v/o + lambda_proj + theta) ...
    size_t phase2 = param_table_trainable_count(&t2);
    size_t extra = 32 * (4096 + 1 + 8);  // ... plus write_proj and eta in Phase 2
    CHECK(phase2 == 1346438144ull + extra, "trainable %zu", phase2);
    param_table_free(&t);
    param_table_free(&t2);
}

// What a layer keeps for its backward follows from what trains (llmc/params.h param_layer_keeps):
// phase 0 keeps all three; phases 1 and 2 (frozen MLP) keep the attention's normed input only; the
// CoDA tensors alone keep it for lambda, and a GQA model training only its write gate keeps it only
// when gradients reach the gate (detach_evicted off).
TEST(param_layer_keeps_what_the_backward_reads) {
    struct { int differential, bounded, detach; TrainPolicy policy; LayerKeeps want; } cases[] = {
        {1, 0, 1, TRAIN_ALL, {1, 1, 1}},
        {1, 0, 1, TRAIN_ATTENTION, {1, 0, 0}},
        {1, 1, 1, TRAIN_ATTENTION, {1, 0, 0}},
        {0, 0, 1, TRAIN_ATTENTION_NO_DIFF, {1, 0, 0}},
        {1, 0, 1, TRAIN_CODA_ONLY, {1, 0, 0}},
        {0, 1, 1, TRAIN_CODA_ONLY, {0, 0, 0}},
        {0, 1, 0, TRAIN_CODA_ONLY, {1, 0, 0}},
        {1, 0, 1, TRAIN_NONE, {0, 0, 0}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ModelConfig c = config_default();
        c.n_layers = 3;
        c.differential = cases[i].differential; c.bounded = cases[i].bounded; c.detach_evicted = cases[i].detach;
        ParamTable t;
        param_table_build(&t, &c, DT_F32);
        param_table_set_trainable(&t, cases[i].policy);
        for (int l = 0; l < c.n_layers; l++) {
            LayerKeeps k = param_layer_keeps(&t, &c, l), w = cases[i].want;
            CHECK(k.hn1 == w.hn1 && k.hn2 == w.hn2 && k.mlp_act == w.mlp_act, "case %zu layer %d: keeps %d %d %d, want %d %d %d", i, l,
                  k.hn1, k.hn2, k.mlp_act, w.hn1, w.hn2, w.mlp_act);
        }
        param_table_free(&t);
    }
}

TEST(config_validate_rejects_bad_fields) {
    CodaError err;
    ModelConfig c = config_default();
    CHECK(config_validate(&c, &err) == 0, "%s", err.msg);
    c.n_kv_heads = 5;
    CHECK(config_validate(&c, &err) != 0 && strstr(err.msg, "num_key_value_heads"), "%s", err.msg);
    c = config_default();
    c.head_dim = 7;
    CHECK(config_validate(&c, &err) != 0 && strstr(err.msg, "head_dim"), "%s", err.msg);
    c = config_default();
    c.bounded = 1; c.window = 0;
    CHECK(config_validate(&c, &err) != 0 && strstr(err.msg, "window"), "%s", err.msg);
}

// Every size in the config has a named upper limit (config.h), checked whether or not the config is
// bounded, and the message names the field and the limit. Regression: "coda": {"window": 2147483647}
// passed, overflowed window + n_exact + n_summary (an int) and ended as an allocation of
// 18446744004990075360 x 4 bytes. NaN and infinity are refused wherever a number is read.
TEST(config_validate_bounds_every_size_and_refuses_non_finite_values) {
    struct { const char* name; size_t offset; int limit; } sizes[] = {
        {"vocab_size", offsetof(ModelConfig, vocab_size), CONFIG_MAX_VOCAB},
        {"hidden_size", offsetof(ModelConfig, dim), CONFIG_MAX_DIM},
        {"intermediate_size", offsetof(ModelConfig, ffn_dim), CONFIG_MAX_FFN},
        {"num_hidden_layers", offsetof(ModelConfig, n_layers), CONFIG_MAX_LAYERS},
        {"num_attention_heads", offsetof(ModelConfig, n_heads), CONFIG_MAX_HEADS},
        {"num_key_value_heads", offsetof(ModelConfig, n_kv_heads), CONFIG_MAX_HEADS},
        {"head_dim", offsetof(ModelConfig, head_dim), CONFIG_MAX_HEAD_DIM},
        {"max_position_embeddings", offsetof(ModelConfig, max_seq_len), CONFIG_MAX_SEQ_LEN},
        {"coda.window (W)", offsetof(ModelConfig, window), CONFIG_MAX_STATE},
        {"coda.n_exact (Me)", offsetof(ModelConfig, n_exact), CONFIG_MAX_STATE},
        {"coda.n_summary (Ms)", offsetof(ModelConfig, n_summary), CONFIG_MAX_STATE},
        {"coda.block_size", offsetof(ModelConfig, block_size), CONFIG_MAX_STATE},
        {"coda.exact_candidates_per_block", offsetof(ModelConfig, exact_candidates_per_block), CONFIG_MAX_STATE},
        {"coda.summary_candidates_per_block", offsetof(ModelConfig, summary_candidates_per_block), CONFIG_MAX_STATE},
    };
    CodaError err;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        const int too_big[2] = {sizes[i].limit + 1, 2147483647};
        for (int k = 0; k < 2; k++)
            for (int bounded = 0; bounded <= 1; bounded++) {  // bounded-state sizes are checked in an unbounded config too
                ModelConfig c = config_default();
                c.bounded = bounded;
                memcpy((char*)&c + sizes[i].offset, &too_big[k], sizeof(int));
                char want[160];
                snprintf(want, sizeof(want), "%s must be in [", sizes[i].name);
                char limit[32];
                snprintf(limit, sizeof(limit), ", %d] (got %d)", sizes[i].limit, too_big[k]);
                err.msg[0] = 0;
                CHECK(config_validate(&c, &err) != 0 && strstr(err.msg, want) && strstr(err.msg, limit), "%s = %d: %s", sizes[i].name,
                      too_big[k], err.msg);
            }
    }
    // at the limits: accepted
    ModelConfig c = config_default();
    c.bounded = 1; c.window = c.n_exact = c.n_summary = c.block_size = CONFIG_MAX_STATE;
    CHECK(config_validate(&c, &err) == 0, "%s", err.msg);
    CHECK(config_state_slots(&c) == 3 * CONFIG_MAX_STATE, "the slot count stays an int");
    // the q width is a product of two bounded fields: bounded itself
    c = config_default();
    c.n_heads = 1024; c.n_kv_heads = 8; c.head_dim = 128;
    CHECK(config_validate(&c, &err) != 0 && strstr(err.msg, "num_attention_heads x head_dim = 1024 x 128 must be <= 65536"), "%s", err.msg);
    // non-finite numbers: every float of the config
    struct { const char* name; size_t offset; int is_double; } reals[] = {
        {"rms_norm_eps", offsetof(ModelConfig, norm_eps), 0}, {"rope_theta", offsetof(ModelConfig, rope_theta), 1},
        {"coda.rope_theta_override", offsetof(ModelConfig, rope_theta_override), 1}, {"initializer_range", offsetof(ModelConfig, init_std), 0},
        {"coda.head_norm_eps", offsetof(ModelConfig, head_norm_eps), 0}, {"coda.theta_init", offsetof(ModelConfig, theta_init), 0},
        {"coda.lambda_init_bias", offsetof(ModelConfig, lambda_init_bias), 0},
        {"coda.write_gate_init_bias", offsetof(ModelConfig, write_gate_init_bias), 0},
        {"coda.eta_init_logit", offsetof(ModelConfig, eta_init_logit), 0},
        {"coda.gate_threshold_exact", offsetof(ModelConfig, gate_threshold_exact), 0},
        {"coda.gate_threshold_summary", offsetof(ModelConfig, gate_threshold_summary), 0},
        {"coda.exact_match_threshold", offsetof(ModelConfig, exact_match_threshold), 0},
        {"coda.exact_novelty_threshold", offsetof(ModelConfig, exact_novelty_threshold), 0},
    };
    const double bad[3] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++)
        for (int k = 0; k < 3; k++) {
            c = config_default();
            if (reals[i].is_double) memcpy((char*)&c + reals[i].offset, &bad[k], sizeof(double));
            else { float f = (float)bad[k]; memcpy((char*)&c + reals[i].offset, &f, sizeof(float)); }
            char want[128];
            snprintf(want, sizeof(want), "%s must be a finite number", reals[i].name);
            err.msg[0] = 0;
            CHECK(config_validate(&c, &err) != 0 && strstr(err.msg, want), "%s = %g: %s", reals[i].name, bad[k], err.msg);
        }
    // an enum value out of range (a config built in code): writers index name tables with it
    c = config_default();
    const int seven = 7;
    memcpy(&c.candidate_order, &seven, sizeof(int));  // stored as an int: no enum value is formed
    CHECK(config_validate(&c, &err) != 0 && strstr(err.msg, "coda.candidate_order must be in [0, 1] (got 7)"), "%s", err.msg);
}

TEST(convert_floats_copies_same_type_bits_and_rejects_non_floats) {
    uint16_t src[3] = {0x7f81, 0xffc3, 0x3f80};  // signalling NaN with payload, negative quiet NaN, 1.0
    uint16_t dst[3] = {0, 0, 0};
    CHECK(convert_floats(dst, DT_BF16, src, DT_BF16, 3) == 0 && memcmp(dst, src, sizeof(src)) == 0, "bf16 -> bf16 must keep every bit");
    float f[3];
    CHECK(convert_floats(f, DT_F32, src, DT_BF16, 3) == 0 && f[2] == 1.0f && isnan(f[0]), "");
    int64_t i64[1] = {1};
    CHECK(convert_floats(f, DT_F32, i64, DT_I64, 1) == -1, "integers are not float-like");
}

// floats_first_nonfinite (the weight loader's NaN/Inf scan) tests 8 bytes at a time: a bad value in
// every lane position, at every alignment, is found at its own index; the largest finite values,
// subnormals and -0 are not bad.
TEST(floats_first_nonfinite_finds_each_lane) {
    static const DType types[4] = {DT_F32, DT_F64, DT_BF16, DT_F16};
    static const uint64_t inf_bits[4] = {0x7f800000u, 0x7ff0000000000000ull, 0x7f80u, 0x7c00u};
    static const uint64_t nan_bits[4] = {0xffc00001u, 0x7ff8000000000001ull, 0xff81u, 0xfe01u};
    static const uint64_t max_bits[4] = {0x7f7fffffu, 0x7fefffffffffffffull, 0x7f7fu, 0x7bffu};  // largest finite
    unsigned char buf[8 * 40 + 8];
    for (int k = 0; k < 4; k++) {
        const size_t es = dtype_size(types[k]), n = 37;
        for (size_t off = 0; off < 8; off++)
            for (size_t bad = 0; bad <= n; bad++) {  // bad == n: none
                for (size_t i = 0; i < n; i++) {
                    uint64_t v = bad == i ? (i % 2 ? nan_bits[k] : inf_bits[k]) : i % 3 == 0 ? max_bits[k] : i % 3 == 1 ? 1 : (1ull << (8 * es - 1));
                    memcpy(buf + off + es * i, &v, es);  // little-endian
                }
                size_t got = floats_first_nonfinite(buf + off, types[k], n);
                CHECK(got == bad, "%s offset %zu: bad value at %zu found at %zu", dtype_name(types[k]), off, bad, got);
            }
    }
    CHECK(floats_first_nonfinite(buf, DT_I32, 4) == 4, "integers hold no NaN");
}

// param_init_fill (the GPU model's random init): the same values for any thread count, each tensor and
// seed its own stream, and each init kind's distribution.
#include <omp.h>
TEST(param_init_fill_is_thread_count_independent_and_distributed_by_kind) {
    ModelConfig c = config_default();
    c.dim = 256; c.ffn_dim = 512; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 64;
    c.vocab_size = 1000;  // embedding 256000 values: four init blocks
    c.differential = 1; c.head_norm = HEAD_NORM_FULL; c.theta_init = 0.25f; c.lambda_init_bias = -6.0f;
    ParamTable t;
    param_table_build(&t, &c, DT_F32);
    size_t maxn = 0;
    for (int i = 0; i < t.n; i++) maxn = t.tensors[i].numel > maxn ? t.tensors[i].numel : maxn;
    float *a = (float*)coda_malloc_or_die(maxn * sizeof(float), "a"), *b = (float*)coda_malloc_or_die(maxn * sizeof(float), "b");
    const int saved_threads = omp_get_max_threads();
    for (int i = 0; i < t.n; i++) {
        const ParamTensor* p = &t.tensors[i];
        omp_set_num_threads(1);
        param_init_fill(&c, p, i, 42, a);
        omp_set_num_threads(3);
        param_init_fill(&c, p, i, 42, b);
        CHECK(memcmp(a, b, p->numel * sizeof(float)) == 0, "%s: 1 and 3 threads draw different values", p->name);
        const InitKind k = PARAM_KINDS[p->kind].init;
        double sum = 0, sq = 0, lo = 1e30, hi = -1e30;
        for (size_t j = 0; j < p->numel; j++) {
            sum += a[j]; sq += (double)a[j] * a[j];
            lo = a[j] < lo ? a[j] : lo; hi = a[j] > hi ? a[j] : hi;
        }
        const double n = (double)p->numel, mean = sum / n, sd = sqrt(sq / n - mean * mean);
        if (k == INIT_NORMAL) {
            CHECK(fabs(mean) < 5 * c.init_std / sqrt(n), "%s: mean %g", p->name, mean);
            CHECK(fabs(sd / c.init_std - 1) < 0.05, "%s: std %g, init_std %g", p->name, sd, c.init_std);
        } else if (k == INIT_FANIN_UNIFORM) {
            const double bound = 1.0 / sqrt((double)p->shape[1]);
            CHECK(lo >= -bound && hi <= bound && hi - lo > bound, "%s: range [%g, %g], bound %g", p->name, lo, hi, bound);
        } else {
            const double v = param_init_constant(&c, k);
            CHECK(lo == (float)v && hi == (float)v, "%s: constant %g, got [%g, %g]", p->name, v, lo, hi);
        }
    }
    // two tensors of the same shape and kind (q of layers 0 and 1), and two seeds, draw different values
    const ParamTensor *q0 = param_find(&t, PK_Q, 0), *q1 = param_find(&t, PK_Q, 1);
    param_init_fill(&c, q0, (int)(q0 - t.tensors), 42, a);
    param_init_fill(&c, q1, (int)(q1 - t.tensors), 42, b);
    CHECK(memcmp(a, b, q0->numel * sizeof(float)) != 0, "layers 0 and 1 share a stream");
    param_init_fill(&c, q0, (int)(q0 - t.tensors), 43, b);
    CHECK(memcmp(a, b, q0->numel * sizeof(float)) != 0, "seeds 42 and 43 draw the same values");
    omp_set_num_threads(saved_threads);
    free(a); free(b);
    param_table_free(&t);
}

TEST(config_check_positions_refuses_contexts_past_the_model_unless_allowed) {
    ModelConfig c = config_default();
    c.max_seq_len = 4096;
    CodaError err;
    CHECK(config_check_positions(&c, 4096, "--ctx 4096", 0, &err) == 0, "%s", err.msg);
    CHECK(config_check_positions(&c, 4097, "--ctx 4097", 0, &err) != 0 && strstr(err.msg, "--ctx 4097") && strstr(err.msg, "4096") &&
              strstr(err.msg, "--allow-long-context"), "%s", err.msg);
    CHECK(config_check_positions(&c, 1 << 20, "the streamed text", 1, &err) == 0, "allowed");
    c.max_seq_len = 0;  // not stated: nothing to check against
    CHECK(config_check_positions(&c, 1 << 20, "x", 0, &err) == 0, "no limit stated");
}

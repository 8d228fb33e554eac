// config.h — the model configuration: Mistral/Llama architecture fields (as Hugging Face's
// config.json names them) plus the CoDA-GQA-L attention options (docs/spec.md §1.1, §2, §3).
// Defaults follow the paper's Mistral protocol (docs/protocol.md §1.2, §1.9) where it fixes a value, and
// the reference module defaults (docs/spec.md §1.1) otherwise. Reading/writing config.json is in
// hf_model.h; this header only defines, defaults and validates.
#pragma once
#include <math.h>
#include "common.h"

// How attention is computed: the 2x2 of the paper's ablation (docs/protocol.md §5).
//   differential = 0: one softmax stream (standard GQA);  1: CoDA signal - lambda * noise stream.
//   bounded      = 0: full causal attention;  1: fixed-size state (ring + exact bank + summary bank).
typedef enum { ROPE_HALF_SPLIT = 0, ROPE_INTERLEAVED = 1 } RopeLayout;     // HF Llama/Mistral = half-split
typedef enum { HEAD_NORM_IDENTITY = 0, HEAD_NORM_FULL = 1 } HeadNormMode;  // docs/spec.md §1.5
typedef enum { WRITE_POLICY_GATED = 0, WRITE_POLICY_NONE = 1 } WritePolicy;
typedef enum { MEM_INIT_RANDOM_NORMAL = 0, MEM_INIT_ZEROS = 1 } MemInit;     // inference state init (training is always zeros)
// Which evicted tokens a block write hands to each bank, and in which order (docs/spec.md §3.1, §11.16).
//   BY_GATE   (default): each bank takes its highest-gated candidates, highest first, ties by
//             ascending eviction index. What the paper describes.
//   REFERENCE: the reference's literal order: one top-T list (T = max(Te, Ts)) in PyTorch CUDA top-k
//             order (gates above the T-th largest in index order, then the ties), each bank taking
//             its first Te / Ts entries. In fp32 this loses the needle demo's needle (docs/spec.md §3.1).
typedef enum { CAND_ORDER_BY_GATE = 0, CAND_ORDER_REFERENCE = 1 } CandidateOrder;

typedef struct {
    // ---- architecture (HF config.json names in comments) ----
    int vocab_size;         // vocab_size
    int dim;                // hidden_size (D)
    int ffn_dim;            // intermediate_size (F)
    int n_layers;           // num_hidden_layers
    int n_heads;            // num_attention_heads (H)
    int n_kv_heads;         // num_key_value_heads (Hkv)
    int head_dim;           // head_dim if present, else hidden_size / num_attention_heads (Dh)
    int max_seq_len;        // max_position_embeddings (informational: RoPE has no table limit)
    float norm_eps;         // rms_norm_eps
    double rope_theta;      // rope_theta (1e6 for Mistral-7B-v0.3)
    int tie_embeddings;     // tie_word_embeddings
    float init_std;         // initializer_range (random init of matrices)
    int bos_id, eos_id;     // bos_token_id, eos_token_id

    // ---- attention kind ----
    int differential;       // CoDA two-stream attention
    int bounded;            // fixed-size KV state
    RopeLayout rope_layout; // pairing convention of RoPE on q/k
    double rope_theta_override;  // > 0: use this base instead of rope_theta (the reference's bounded 10,000)
    int rope_bf16_positions;     // emulate the reference's bf16 position/angle arithmetic (docs/protocol.md §8.2)

    // ---- CoDA (differential) options ----
    HeadNormMode head_norm;
    float head_norm_eps;    // 1e-6
    float theta_init;       // noise-rotation angle at init (0 in the paper's training)
    float lambda_init_bias; // lambda_proj bias at init (-6 -> lambda ~ 0.0025)

    // ---- bounded-state options ----
    int window;             // W: recent ring slots
    int n_exact;            // Me: exact landmark bank slots
    int n_summary;          // Ms: summary bank slots
    int block_size;         // chunked prefill / training block
    WritePolicy write_policy;
    float write_gate_init_bias;     // write_proj bias at init (-2 -> gate 0.119)
    float gate_threshold_exact;     // keep for exact bank iff gate >= 0.10
    float gate_threshold_summary;   // keep for summary bank iff gate >= 0.05
    float exact_match_threshold;    // hit iff best cosine >= 0.90
    float exact_novelty_threshold;  // novel iff best cosine < 0.70
    int exact_refresh_on_hit;
    int exact_candidates_per_block;   // 8
    int summary_candidates_per_block; // 64
    CandidateOrder candidate_order;   // BY_GATE (the reference's order is a switch)
    float eta_init_logit;           // summary_eta_logit at init (-3)
    int summary_overwrite_on_insert;
    MemInit mem_init;               // inference state init
    int mask_unused_memory;         // attend only to valid slots
    int detach_evicted;             // evicted k/v/gates are constants in the bank update (no gradient)
    int cross_block_grad;           // gradients flow through state carried across blocks (ring, bank history)
} ModelConfig;

// The Mistral-7B architecture (v0.1 vocabulary): a base every field is valid for, whose sizes tests
// and presets override; CoDA options at the paper's defaults.
static inline ModelConfig config_default(void) {
    ModelConfig c;
    memset(&c, 0, sizeof(c));
    c.vocab_size = 32000; c.dim = 4096; c.ffn_dim = 14336; c.n_layers = 32;
    c.n_heads = 32; c.n_kv_heads = 8; c.head_dim = 128; c.max_seq_len = 32768;
    c.norm_eps = 1e-5f; c.rope_theta = 1e6; c.tie_embeddings = 0; c.init_std = 0.02f;
    c.bos_id = 1; c.eos_id = 2;
    c.differential = 0; c.bounded = 0; c.rope_layout = ROPE_HALF_SPLIT;
    c.rope_theta_override = 0.0; c.rope_bf16_positions = 0;
    c.head_norm = HEAD_NORM_IDENTITY; c.head_norm_eps = 1e-6f;
    c.theta_init = 0.0f; c.lambda_init_bias = -6.0f;
    c.window = 256; c.n_exact = 64; c.n_summary = 64; c.block_size = 256;
    c.write_policy = WRITE_POLICY_GATED; c.write_gate_init_bias = -2.0f;
    c.gate_threshold_exact = 0.10f; c.gate_threshold_summary = 0.05f;
    c.exact_match_threshold = 0.90f; c.exact_novelty_threshold = 0.70f;
    c.exact_refresh_on_hit = 0; c.exact_candidates_per_block = 8; c.summary_candidates_per_block = 64;
    c.candidate_order = CAND_ORDER_BY_GATE;
    c.eta_init_logit = -3.0f; c.summary_overwrite_on_insert = 1;
    c.mem_init = MEM_INIT_RANDOM_NORMAL; c.mask_unused_memory = 1;
    c.detach_evicted = 1; c.cross_block_grad = 1;
    return c;
}

static inline int config_group_size(const ModelConfig* c) { return c->n_heads / c->n_kv_heads; }
static inline int config_qdim(const ModelConfig* c) { return c->n_heads * c->head_dim; }
static inline int config_kvdim(const ModelConfig* c) { return c->n_kv_heads * c->head_dim; }
static inline double config_rope_base(const ModelConfig* c) {
    return c->rope_theta_override > 0 ? c->rope_theta_override : c->rope_theta;
}
// Slots of the bounded state: ring, then exact bank, then summary bank (docs/spec.md §2.1).
static inline int config_state_slots(const ModelConfig* c) { return c->window + c->n_exact + c->n_summary; }
// A bounded model's gradients reach the evicted tokens and the write gate only without detach; the
// gate's own backward (its input, weights and bias) runs then with the gated write policy.
static inline int config_grads_through_banks(const ModelConfig* c) { return c->bounded && !c->detach_evicted; }
static inline int config_write_gate_backward(const ModelConfig* c) {
    return config_grads_through_banks(c) && c->write_policy == WRITE_POLICY_GATED;
}

// A run that puts tokens at positions [0, n) (a window, a chunk, a streamed text, a prompt and its
// continuation) on a model whose config says it was built for max_seq_len positions (0: not stated):
// refused unless `allow`, naming what asked for it and the flag that allows it.
static inline int config_check_positions(const ModelConfig* c, long long n, const char* what, int allow, CodaError* err) {
    if (allow || c->max_seq_len <= 0 || n <= c->max_seq_len) return 0;
    return coda_errorf(err, "%s reaches position %lld, beyond the model's max_position_embeddings %d (config.json): it was not "
                            "built for positions that far; --allow-long-context runs it anyway", what, n - 1, c->max_seq_len);
}

// Upper limits of every size in the config. Each is far above any real model, and low enough that
// the products the code forms from them (widths, slot counts, table sizes, int loop bounds) cannot
// wrap; a typo or a corrupt config.json stops here with the field's name, not as a wrapped
// allocation much later.
#define CONFIG_MAX_VOCAB (1 << 24)     // ids: the largest real vocabularies have ~256K; 2^24 x 4 bytes is one table
#define CONFIG_MAX_DIM (1 << 16)       // hidden_size and the q / kv widths (heads x head_dim): the widest models have ~16-25K
#define CONFIG_MAX_FFN (1 << 18)       // intermediate_size: 4x CONFIG_MAX_DIM (Mistral-7B has 14336)
#define CONFIG_MAX_LAYERS (1 << 10)    // num_hidden_layers: the deepest real models have ~130
#define CONFIG_MAX_HEADS (1 << 10)     // num_attention_heads, num_key_value_heads: 7B has 32 / 8
#define CONFIG_MAX_HEAD_DIM (1 << 10)  // head_dim: real models use 64..256
#define CONFIG_MAX_SEQ_LEN (1 << 24)   // max_position_embeddings: the longest real contexts are ~10M
#define CONFIG_MAX_STATE (1 << 20)     // W, Me, Ms, block_size and candidates per block, each: the paper uses 256/64/64;
                                       // W + Me + Ms <= 3 x 2^20 stays an int, and so does a block of rows

// The int an enum field holds (enums are int-sized: hf_model.h checks), whatever its value.
static inline int config__stored_int(const void* field) {
    int v;
    memcpy(&v, field, sizeof(v));
    return v;
}

// Checks the invariants every later stage relies on; the message names the offending field and,
// for a size, its limit. The bounded-state fields are checked whether or not the config is bounded:
// a config can be switched to bounded later (infer_coda --bounded 1), and written out meanwhile.
static inline int config_validate(const ModelConfig* c, CodaError* err) {
#define REQUIRE(cond, ...) do { if (!(cond)) return coda_errorf(err, __VA_ARGS__); } while (0)
// An int field in [lo, hi]; the message gives the field's config.json name and the range.
#define REQUIRE_RANGE(v, lo, hi, name) \
    REQUIRE((v) >= (lo) && (v) <= (hi), "config: %s must be in [%d, %d] (got %d)", name, (int)(lo), (int)(hi), (int)(v))
// A float field that must be finite (NaN and Infinity parse as JSON numbers but mean nothing here).
#define REQUIRE_FINITE(v, name) REQUIRE(isfinite((double)(v)), "config: %s must be a finite number (got %g)", name, (double)(v))
    REQUIRE_RANGE(c->vocab_size, 1, CONFIG_MAX_VOCAB, "vocab_size");
    REQUIRE_RANGE(c->dim, 1, CONFIG_MAX_DIM, "hidden_size");
    REQUIRE_RANGE(c->ffn_dim, 1, CONFIG_MAX_FFN, "intermediate_size");
    REQUIRE_RANGE(c->n_layers, 1, CONFIG_MAX_LAYERS, "num_hidden_layers");
    REQUIRE_RANGE(c->n_heads, 1, CONFIG_MAX_HEADS, "num_attention_heads");
    REQUIRE_RANGE(c->n_kv_heads, 1, CONFIG_MAX_HEADS, "num_key_value_heads");
    REQUIRE(c->n_heads % c->n_kv_heads == 0, "config: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)",
            c->n_heads, c->n_kv_heads);
    REQUIRE_RANGE(c->head_dim, 2, CONFIG_MAX_HEAD_DIM, "head_dim");
    REQUIRE(c->head_dim % 2 == 0, "config: head_dim must be even: RoPE rotates pairs (got %d)", c->head_dim);
    REQUIRE((int64_t)c->n_heads * c->head_dim <= CONFIG_MAX_DIM,
            "config: num_attention_heads x head_dim = %d x %d must be <= %d", c->n_heads, c->head_dim, CONFIG_MAX_DIM);
    REQUIRE_RANGE(c->max_seq_len, 0, CONFIG_MAX_SEQ_LEN, "max_position_embeddings");
    REQUIRE_FINITE(c->norm_eps, "rms_norm_eps");
    REQUIRE(c->norm_eps > 0, "config: rms_norm_eps must be > 0 (got %g)", (double)c->norm_eps);
    REQUIRE_FINITE(c->rope_theta, "rope_theta");
    REQUIRE(c->rope_theta > 0, "config: rope_theta must be > 0 (got %g)", c->rope_theta);
    REQUIRE_FINITE(c->rope_theta_override, "coda.rope_theta_override");
    REQUIRE(c->rope_theta_override >= 0, "config: coda.rope_theta_override must be 0 (none) or > 0 (got %g)", c->rope_theta_override);
    REQUIRE_FINITE(c->init_std, "initializer_range");
    REQUIRE(c->init_std >= 0, "config: initializer_range must be >= 0 (got %g)", (double)c->init_std);
    REQUIRE_FINITE(c->head_norm_eps, "coda.head_norm_eps");
    REQUIRE(c->head_norm_eps > 0, "config: coda.head_norm_eps must be > 0 (got %g)", (double)c->head_norm_eps);
    REQUIRE_FINITE(c->theta_init, "coda.theta_init");
    REQUIRE_FINITE(c->lambda_init_bias, "coda.lambda_init_bias");
    REQUIRE_FINITE(c->write_gate_init_bias, "coda.write_gate_init_bias");
    REQUIRE_FINITE(c->eta_init_logit, "coda.eta_init_logit");
    REQUIRE_FINITE(c->gate_threshold_exact, "coda.gate_threshold_exact");
    REQUIRE_FINITE(c->gate_threshold_summary, "coda.gate_threshold_summary");
    REQUIRE_FINITE(c->exact_match_threshold, "coda.exact_match_threshold");
    REQUIRE_FINITE(c->exact_novelty_threshold, "coda.exact_novelty_threshold");
    // enums (a config built in code could hold any int; writers index name tables with them). Read
    // as the int they are stored in: in C++, loading an out-of-range enum value is itself undefined.
    REQUIRE_RANGE(config__stored_int(&c->rope_layout), 0, 1, "coda.rope_layout");
    REQUIRE_RANGE(config__stored_int(&c->head_norm), 0, 1, "coda.head_norm");
    REQUIRE_RANGE(config__stored_int(&c->write_policy), 0, 1, "coda.write_policy");
    REQUIRE_RANGE(config__stored_int(&c->mem_init), 0, 1, "coda.mem_init");
    REQUIRE_RANGE(config__stored_int(&c->candidate_order), 0, 1, "coda.candidate_order");
    // bounded state
    REQUIRE_RANGE(c->window, 1, CONFIG_MAX_STATE, "coda.window (W)");
    REQUIRE_RANGE(c->n_exact, 0, CONFIG_MAX_STATE, "coda.n_exact (Me)");
    REQUIRE_RANGE(c->n_summary, 0, CONFIG_MAX_STATE, "coda.n_summary (Ms)");
    REQUIRE_RANGE(c->block_size, 1, CONFIG_MAX_STATE, "coda.block_size");
    REQUIRE_RANGE(c->exact_candidates_per_block, 0, CONFIG_MAX_STATE, "coda.exact_candidates_per_block");
    REQUIRE_RANGE(c->summary_candidates_per_block, 0, CONFIG_MAX_STATE, "coda.summary_candidates_per_block");
#undef REQUIRE_FINITE
#undef REQUIRE_RANGE
#undef REQUIRE
    return 0;
}

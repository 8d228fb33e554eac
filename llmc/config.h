// config.h — the model configuration: Mistral/Llama architecture fields (as Hugging Face's
// config.json names them) plus the CoDA-GQA-L attention options (SPEC.md §1.1, §2, §3).
// Defaults follow the paper's Mistral protocol (PROTOCOL.md §1.2, §1.9) where it fixes a value, and
// the reference module defaults (SPEC.md §1.1) otherwise. Reading/writing config.json is in
// hf_model.h; this header only defines, defaults and validates.
#pragma once
#include <math.h>
#include "common.h"

// How attention is computed: the 2x2 of the paper's ablation (PROTOCOL.md §5).
//   differential = 0: one softmax stream (standard GQA);  1: CoDA signal - lambda * noise stream.
//   bounded      = 0: full causal attention;  1: fixed-size state (ring + exact bank + summary bank).
typedef enum { ROPE_HALF_SPLIT = 0, ROPE_INTERLEAVED = 1 } RopeLayout;     // HF Llama/Mistral = half-split
typedef enum { HEAD_NORM_IDENTITY = 0, HEAD_NORM_FULL = 1 } HeadNormMode;  // SPEC §1.5
typedef enum { WRITE_POLICY_GATED = 0, WRITE_POLICY_NONE = 1 } WritePolicy;
typedef enum { MEM_INIT_RANDOM_NORMAL = 0, MEM_INIT_ZEROS = 1 } MemInit;     // inference state init (training is always zeros)
// Which evicted tokens a block write hands to each bank, and in which order (SPEC §3.1, §11.16).
//   BY_GATE   (default): each bank takes its highest-gated candidates, highest first, ties by
//             ascending eviction index. What the paper describes.
//   REFERENCE: the reference's literal order: one top-T list (T = max(Te, Ts)) in PyTorch CUDA top-k
//             order (gates above the T-th largest in index order, then the ties), each bank taking
//             its first Te / Ts entries. In fp32 this loses the needle demo's needle (SPEC §3.1).
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
    int rope_bf16_positions;     // emulate the reference's bf16 position/angle arithmetic (PROTOCOL §8.2)

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

// A tiny architecture for tests; CoDA options at the paper's defaults.
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
// Slots of the bounded state: ring, then exact bank, then summary bank (SPEC §2.1).
static inline int config_state_slots(const ModelConfig* c) { return c->window + c->n_exact + c->n_summary; }

// Checks the invariants every later stage relies on; the message names the offending field.
static inline int config_validate(const ModelConfig* c, CodaError* err) {
#define REQUIRE(cond, ...) do { if (!(cond)) return coda_errorf(err, __VA_ARGS__); } while (0)
    REQUIRE(c->vocab_size > 0, "config: vocab_size must be > 0 (got %d)", c->vocab_size);
    REQUIRE(c->dim > 0, "config: hidden_size must be > 0 (got %d)", c->dim);
    REQUIRE(c->ffn_dim > 0, "config: intermediate_size must be > 0 (got %d)", c->ffn_dim);
    REQUIRE(c->n_layers > 0, "config: num_hidden_layers must be > 0 (got %d)", c->n_layers);
    REQUIRE(c->n_heads > 0 && c->n_kv_heads > 0, "config: head counts must be > 0 (got %d/%d)", c->n_heads, c->n_kv_heads);
    REQUIRE(c->n_heads % c->n_kv_heads == 0, "config: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)",
            c->n_heads, c->n_kv_heads);
    REQUIRE(c->head_dim > 0 && c->head_dim % 2 == 0, "config: head_dim must be positive and even (got %d)", c->head_dim);
    REQUIRE(c->norm_eps > 0, "config: rms_norm_eps must be > 0");
    REQUIRE(c->rope_theta > 0, "config: rope_theta must be > 0");
    REQUIRE(c->head_norm_eps > 0, "config: head_norm_eps must be > 0");
    if (c->bounded) {
        REQUIRE(c->window > 0, "config: window (W) must be > 0 (got %d)", c->window);
        REQUIRE(c->n_exact >= 0 && c->n_summary >= 0, "config: bank sizes must be >= 0 (got Me=%d Ms=%d)", c->n_exact, c->n_summary);
        REQUIRE(c->block_size > 0, "config: block_size must be > 0 (got %d)", c->block_size);
        REQUIRE(c->exact_candidates_per_block >= 0 && c->summary_candidates_per_block >= 0,
                "config: candidates per block must be >= 0");
    }
#undef REQUIRE
    return 0;
}

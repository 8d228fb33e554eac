// llmc/cpu/attention.h — one attention layer of the CPU reference, forward and backward, for every
// variant of the 2x2 (GQA or CoDA differential) x (unbounded or bounded). Type-generic (REAL, FN).
//
// One routine serves every variant: a block of queries attends to a KeySet = P "prefix" keys (slots
// of the bounded state) followed by the block's own keys, causally. Unbounded attention is one block
// with no prefix; bounded prefill walks blocks (docs/spec.md §2.3); the decode step (§2.4) is one query over
// the state's slots. CoDA (docs/spec.md §1): q_noise = R_theta(RoPE(q)) on interleaved pairs, both streams
// share every K/V, o = A_sig - lambda * A_noise, optional head RMSNorm, then o_proj.
//
// Training with bounded attention records a tape per batch row: the state each block attended to (a
// copy) and what each block write did (WriteLog). The backward replays blocks in reverse, sending
// slot gradients to the tokens they came from (ring, exact bank) and through the summary-bank EMA
// (docs/spec.md §4), honouring detach_evicted and cross_block_grad.

typedef struct {
    REAL *wq, *wk, *wv, *wo;        // projections
    REAL *theta, *lam_w, *lam_b;     // differential: noise rotation, lambda gate
    REAL *head_norm;                 // differential with head_norm full
    REAL *write_w, *write_b, *eta;   // bounded: write gate, summary EMA logit per KV head
} FN(AttnWeights);

typedef struct FN(AttnActs_) {
    int B, T, n_blocks;
    REAL *q, *k, *v;        // [B*T, H*Dh], [B*T, Hkv*Dh] x2; q and k after RoPE
    REAL *qn;               // [B*T, H*Dh] noise query
    REAL *lam;              // [B*T, H]
    REAL *gate;             // [B*T] write gate
    REAL *a_sig, *a_noise;  // [B*T, H*Dh] attention output of each stream
    REAL *o;                // [B*T, H*Dh] a_sig - lam * a_noise (before head norm)
    REAL *hn_rstd;          // [B*T, H]
    REAL *out;              // [B*T, H*Dh] input of o_proj
    REAL *cosv, *sinv;      // [B*T, Dh/2] RoPE tables of each row's positions
    int64_t* pos0;          // [B] position of each row's first token
    FN(BankState)* snap;    // [B * n_blocks] state seen by each block (bounded training)
    FN(WriteLog)* wlog;     // [B * n_blocks] what each block's write did
    // Finite-difference checks of detached gradients only: a previous training forward whose values
    // stand in for the ones the gradient treats as constants (evicted candidates when detach_evicted;
    // the state at each block boundary when cross_block_grad is off). NULL otherwise.
    const struct FN(AttnActs_)* stopgrad_ref;
} FN(AttnActs);

static void FN(attn_acts_alloc)(FN(AttnActs)* a, const ModelConfig* c, int B, int T, int with_tape) {
    memset(a, 0, sizeof(*a));
    a->B = B; a->T = T;
    size_t BT = (size_t)B * T, qd = (size_t)config_qdim(c), kvd = (size_t)config_kvdim(c);
    const char* what = "attention activations";
    a->q = (REAL*)coda_calloc_or_die(BT * qd, sizeof(REAL), what);
    a->k = (REAL*)coda_calloc_or_die(BT * kvd, sizeof(REAL), what);
    a->v = (REAL*)coda_calloc_or_die(BT * kvd, sizeof(REAL), what);
    a->qn = (REAL*)coda_calloc_or_die(BT * qd, sizeof(REAL), what);
    a->lam = (REAL*)coda_calloc_or_die(BT * c->n_heads, sizeof(REAL), what);
    a->gate = (REAL*)coda_calloc_or_die(BT, sizeof(REAL), what);
    a->a_sig = (REAL*)coda_calloc_or_die(BT * qd, sizeof(REAL), what);
    a->a_noise = (REAL*)coda_calloc_or_die(BT * qd, sizeof(REAL), what);
    a->o = (REAL*)coda_calloc_or_die(BT * qd, sizeof(REAL), what);
    a->hn_rstd = (REAL*)coda_calloc_or_die(BT * c->n_heads, sizeof(REAL), what);
    a->out = (REAL*)coda_calloc_or_die(BT * qd, sizeof(REAL), what);
    a->cosv = (REAL*)coda_calloc_or_die(BT * c->head_dim / 2, sizeof(REAL), what);
    a->sinv = (REAL*)coda_calloc_or_die(BT * c->head_dim / 2, sizeof(REAL), what);
    a->pos0 = (int64_t*)coda_calloc_or_die((size_t)B, sizeof(int64_t), what);
    if (with_tape && c->bounded) {
        a->n_blocks = (T + c->block_size - 1) / c->block_size;
        size_t n = (size_t)B * a->n_blocks;
        a->snap = (FN(BankState)*)coda_calloc_or_die(n, sizeof(FN(BankState)), "bank snapshots");
        a->wlog = (FN(WriteLog)*)coda_calloc_or_die(n, sizeof(FN(WriteLog)), "bank write logs");
        int Ts = c->summary_candidates_per_block, Ms = c->n_summary ? c->n_summary : 1;
        for (size_t i = 0; i < n; i++) {
            FN(bank_alloc)(&a->snap[i], c);
            FN(WriteLog)* w = &a->wlog[i];
            w->cand_pos = (int64_t*)coda_calloc_or_die((size_t)(Ts ? Ts : 1), sizeof(int64_t), "write log");
            w->cand_slot = (int*)coda_calloc_or_die((size_t)(Ts ? Ts : 1), sizeof(int), "write log");
            w->cand_w = (REAL*)coda_calloc_or_die((size_t)(Ts ? Ts : 1), sizeof(REAL), "write log");
            w->slot_active = (unsigned char*)coda_calloc_or_die((size_t)Ms, 1, "write log");
            w->slot_new = (unsigned char*)coda_calloc_or_die((size_t)Ms, 1, "write log");
            w->slot_cnt = (REAL*)coda_calloc_or_die((size_t)Ms, sizeof(REAL), "write log");
        }
    }
}

static void FN(attn_acts_free)(FN(AttnActs)* a) {
    free(a->q); free(a->k); free(a->v); free(a->qn); free(a->lam); free(a->gate); free(a->a_sig);
    free(a->a_noise); free(a->o); free(a->hn_rstd); free(a->out); free(a->cosv); free(a->sinv); free(a->pos0);
    for (int i = 0; a->snap && i < a->B * a->n_blocks; i++) {
        FN(bank_free)(&a->snap[i]);
        FN(WriteLog)* w = &a->wlog[i];
        free(w->cand_pos); free(w->cand_slot); free(w->cand_w); free(w->slot_active); free(w->slot_new); free(w->slot_cnt);
    }
    free(a->snap); free(a->wlog);
    memset(a, 0, sizeof(*a));
}

// ---------------------------------------------------------------------------------------------
// Key sets and the two-stream attention core

typedef struct {
    int P, nb;      // prefix keys (state slots), block keys (causal)
    int* slot;      // [P] state slot of each prefix key
    REAL* k;        // [Hkv][P + nb][Dh]
    REAL* v;
} FN(KeySet);

// Gathers the prefix (allowed slots of st, or every slot when mask_unused_memory is off; none if st
// is NULL) and the nb block keys starting at token row t0 of k_rows/v_rows ([T][Hkv*Dh]).
static void FN(keyset_build)(FN(KeySet)* ks, const ModelConfig* c, const FN(BankState)* st, const REAL* k_rows,
                             const REAL* v_rows, int t0, int nb) {
    int Hkv = c->n_kv_heads, Dh = c->head_dim, kvd = Hkv * Dh, slots = st ? st->slots : 0;
    ks->slot = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(slots ? slots : 1), "key set");
    ks->P = 0;
    for (int s = 0; s < slots; s++)
        if (st->allowed[s] || !c->mask_unused_memory) ks->slot[ks->P++] = s;
    ks->nb = nb;
    int n = ks->P + nb;
    ks->k = (REAL*)coda_malloc_or_die(sizeof(REAL) * (size_t)Hkv * (n ? n : 1) * Dh, "key set");
    ks->v = (REAL*)coda_malloc_or_die(sizeof(REAL) * (size_t)Hkv * (n ? n : 1) * Dh, "key set");
    for (int g = 0; g < Hkv; g++) {
        for (int j = 0; j < ks->P; j++) {
            memcpy(ks->k + ((size_t)g * n + j) * Dh, FN(bank_k)(st, g, ks->slot[j]), sizeof(REAL) * Dh);
            memcpy(ks->v + ((size_t)g * n + j) * Dh, FN(bank_v)(st, g, ks->slot[j]), sizeof(REAL) * Dh);
        }
        for (int j = 0; j < nb; j++) {
            memcpy(ks->k + ((size_t)g * n + ks->P + j) * Dh, k_rows + (size_t)(t0 + j) * kvd + g * Dh, sizeof(REAL) * Dh);
            memcpy(ks->v + ((size_t)g * n + ks->P + j) * Dh, v_rows + (size_t)(t0 + j) * kvd + g * Dh, sizeof(REAL) * Dh);
        }
    }
}
static void FN(keyset_free)(FN(KeySet)* ks) { free(ks->slot); free(ks->k); free(ks->v); }

// Keys query i of the block may see: the whole prefix, plus block keys 0..i.
static inline int FN(keyset_visible)(const FN(KeySet)* ks, int i) { return ks->P + (ks->nb ? (i + 1 < ks->nb ? i + 1 : ks->nb) : 0); }

// p[j] = softmax_j(q·K[j] / sqrt(Dh)) over the first nvis keys of K [.][Dh] (max-subtracted).
static void FN(attention_probs)(const REAL* qh, const REAL* K, int nvis, int Dh, REAL* p) {
    REAL scale = (REAL)1 / sqrt((REAL)Dh), mx = (REAL)-INFINITY, sum = 0;
    for (int j = 0; j < nvis; j++) {
        REAL d = 0;
        for (int e = 0; e < Dh; e++) d += qh[e] * K[(size_t)j * Dh + e];
        p[j] = d * scale;
        mx = p[j] > mx ? p[j] : mx;
    }
    for (int j = 0; j < nvis; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
    for (int j = 0; j < nvis; j++) p[j] /= sum;
}

// softmax(q·Kᵀ/sqrt(Dh))·V for nq queries ([nq][H*Dh]) and every head; GQA head h uses KV head h/G.
// Streams: the signal query q, and (differential) the noise query qn.
static void FN(attend_forward)(const ModelConfig* c, const FN(KeySet)* ks, const REAL* q, const REAL* qn, int nq,
                               REAL* a_sig, REAL* a_noise) {
    int H = c->n_heads, Dh = c->head_dim, G = config_group_size(c), n = ks->P + ks->nb;
    REAL* p = (REAL*)coda_malloc_or_die(sizeof(REAL) * (size_t)(n ? n : 1), "attention scores");
    for (int i = 0; i < nq; i++) {
        int nvis = FN(keyset_visible)(ks, i);
        for (int h = 0; h < H; h++) {
            const REAL* K = ks->k + (size_t)(h / G) * n * Dh;
            const REAL* V = ks->v + (size_t)(h / G) * n * Dh;
            for (int s = 0; s < (c->differential ? 2 : 1); s++) {
                const REAL* qh = (s ? qn : q) + ((size_t)i * H + h) * Dh;
                REAL* out = (s ? a_noise : a_sig) + ((size_t)i * H + h) * Dh;
                memset(out, 0, sizeof(REAL) * Dh);
                if (nvis == 0) continue;  // nothing to attend to: zeros (docs/spec.md §2.4)
                FN(attention_probs)(qh, K, nvis, Dh, p);
                for (int j = 0; j < nvis; j++)
                    for (int e = 0; e < Dh; e++) out[e] += p[j] * V[(size_t)j * Dh + e];
            }
        }
    }
    free(p);
}

// Backward of attend_forward: accumulates dq, dqn ([nq][H*Dh]) and dK, dV ([Hkv][P+nb][Dh], the key
// set's layout) from the output gradients of both streams. Probabilities are recomputed.
static void FN(attend_backward)(const ModelConfig* c, const FN(KeySet)* ks, const REAL* q, const REAL* qn, int nq,
                                const REAL* d_sig, const REAL* d_noise, REAL* dq, REAL* dqn, REAL* dK, REAL* dV) {
    int H = c->n_heads, Dh = c->head_dim, G = config_group_size(c), n = ks->P + ks->nb;
    REAL scale = (REAL)1 / sqrt((REAL)Dh);
    REAL* p = (REAL*)coda_malloc_or_die(sizeof(REAL) * (size_t)(n ? n : 1) * 2, "attention backward");
    REAL* dp = p + (n ? n : 1);
    for (int i = 0; i < nq; i++) {
        int nvis = FN(keyset_visible)(ks, i);
        if (nvis == 0) continue;
        for (int h = 0; h < H; h++) {
            size_t kv0 = (size_t)(h / G) * n * Dh;
            const REAL *K = ks->k + kv0, *V = ks->v + kv0;
            for (int s = 0; s < (c->differential ? 2 : 1); s++) {
                const REAL* qh = (s ? qn : q) + ((size_t)i * H + h) * Dh;
                const REAL* dout = (s ? d_noise : d_sig) + ((size_t)i * H + h) * Dh;
                REAL* dqh = (s ? dqn : dq) + ((size_t)i * H + h) * Dh;
                REAL dot = 0;
                FN(attention_probs)(qh, K, nvis, Dh, p);
                for (int j = 0; j < nvis; j++) {
                    REAL d = 0;
                    for (int e = 0; e < Dh; e++) d += dout[e] * V[(size_t)j * Dh + e];
                    dp[j] = d;
                    dot += p[j] * d;
                }
                for (int j = 0; j < nvis; j++) {
                    REAL ds = p[j] * (dp[j] - dot) * scale;
                    for (int e = 0; e < Dh; e++) {
                        dqh[e] += ds * K[(size_t)j * Dh + e];
                        dK[kv0 + (size_t)j * Dh + e] += ds * qh[e];
                        dV[kv0 + (size_t)j * Dh + e] += p[j] * dout[e];
                    }
                }
            }
        }
    }
    free(p);
}

// ---------------------------------------------------------------------------------------------
// Per-token pieces: projections, RoPE + noise rotation, stream combination and head norm

// q, k, v, lambda, write gate for n token rows of x [n, D].
static void FN(attn_project)(const FN(AttnWeights)* w, const ModelConfig* c, const REAL* x, int n, REAL* q, REAL* k,
                             REAL* v, REAL* lam, REAL* gate) {
    int D = c->dim, H = c->n_heads;
    FN(matmul_forward)(q, x, w->wq, NULL, n, D, config_qdim(c));
    FN(matmul_forward)(k, x, w->wk, NULL, n, D, config_kvdim(c));
    FN(matmul_forward)(v, x, w->wv, NULL, n, D, config_kvdim(c));
    if (c->differential) {
        FN(matmul_forward)(lam, x, w->lam_w, w->lam_b, n, D, H);
        for (size_t i = 0; i < (size_t)n * H; i++) lam[i] = FN(sigmoid)(lam[i]);
    }
    if (c->bounded) {
        if (c->write_policy == WRITE_POLICY_NONE) {
            for (int t = 0; t < n; t++) gate[t] = 1;
        } else {
            FN(matmul_forward)(gate, x, w->write_w, w->write_b, n, D, 1);
            for (int t = 0; t < n; t++) gate[t] = FN(sigmoid)(gate[t]);
        }
    }
}

// Noise query: rotate interleaved pairs (2j, 2j+1) of each head's RoPE'd q by theta[h, j] (docs/spec.md §1.4).
// sign = -1 applies the inverse rotation (the backward with respect to q).
static void FN(noise_rotate)(REAL* out, const REAL* q, const REAL* theta, int n, int H, int Dh, int sign) {
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < Dh / 2; j++) {
                size_t a = ((size_t)t * H + h) * Dh + 2 * j;
                REAL th = theta[h * (Dh / 2) + j], cs = cos(th), sn = sign * sin(th), x0 = q[a], x1 = q[a + 1];
                out[a] = x0 * cs - x1 * sn;
                out[a + 1] = x0 * sn + x1 * cs;
            }
}

// o = a_sig - lam * a_noise (differential) or a_sig; out = head RMSNorm(o) or o.
static void FN(combine_forward)(const FN(AttnWeights)* w, const ModelConfig* c, const REAL* a_sig, const REAL* a_noise,
                                const REAL* lam, REAL* o, REAL* rstd, REAL* out, int n) {
    int H = c->n_heads, Dh = c->head_dim;
    for (size_t th = 0; th < (size_t)n * H; th++) {
        for (int e = 0; e < Dh; e++) {
            size_t i = th * Dh + e;
            o[i] = c->differential ? a_sig[i] - lam[th] * a_noise[i] : a_sig[i];
        }
    }
    if (c->differential && c->head_norm == HEAD_NORM_FULL)
        FN(rmsnorm_forward)(out, rstd, o, w->head_norm, n * H, Dh, c->head_norm_eps);
    else
        memcpy(out, o, sizeof(REAL) * (size_t)n * H * Dh);
}

// ---------------------------------------------------------------------------------------------
// Forward

// One batch row: RoPE tables, RoPE on q and k, noise rotation; then attention (unbounded: one causal
// block; bounded: blocks over the state, writing it when write_cache). tape_row: this row's
// snapshots/logs (bounded training) or NULL.
static void FN(attn_row_forward)(const FN(AttnWeights)* w, const ModelConfig* c, FN(AttnActs)* a, int b,
                                 FN(BankState)* st, int write_cache) {
    int T = a->T, H = c->n_heads, Dh = c->head_dim, qd = config_qdim(c), kvd = config_kvdim(c);
    size_t r0 = (size_t)b * T;
    REAL *q = a->q + r0 * qd, *k = a->k + r0 * kvd, *v = a->v + r0 * kvd, *qn = a->qn + r0 * qd;
    int64_t pos0 = st ? st->pos : 0;
    a->pos0[b] = pos0;
    REAL *cs = a->cosv + r0 * (Dh / 2), *sn = a->sinv + r0 * (Dh / 2);
    FN(rope_tables)(cs, sn, pos0, T, Dh, config_rope_base(c), c->rope_bf16_positions);
    FN(rope_apply)(q, cs, sn, T, H, Dh, c->rope_layout, +1);
    FN(rope_apply)(k, cs, sn, T, c->n_kv_heads, Dh, c->rope_layout, +1);
    if (c->differential) FN(noise_rotate)(qn, q, w->theta, T, H, Dh, +1);
    if (!c->bounded) {
        FN(KeySet) ks;
        FN(keyset_build)(&ks, c, NULL, k, v, 0, T);
        FN(attend_forward)(c, &ks, q, qn, T, a->a_sig + r0 * qd, a->a_noise + r0 * qd);
        FN(keyset_free)(&ks);
        return;
    }
    for (int j = 0, t0 = 0; t0 < T; j++, t0 += c->block_size) {
        int nb = T - t0 < c->block_size ? T - t0 : c->block_size;
        if (a->snap) FN(bank_copy)(&a->snap[(size_t)b * a->n_blocks + j], st);
        FN(KeySet) ks;
        FN(keyset_build)(&ks, c, st, k, v, t0, nb);
        FN(attend_forward)(c, &ks, q + (size_t)t0 * qd, qn + (size_t)t0 * qd, nb, a->a_sig + (r0 + t0) * qd,
                           a->a_noise + (r0 + t0) * qd);
        FN(keyset_free)(&ks);
        if (!write_cache) continue;
        const FN(AttnActs)* ref = a->stopgrad_ref;
        FN(FrozenRows) frozen = {NULL, NULL, NULL, 0};
        if (ref) {
            if (!c->cross_block_grad) FN(bank_copy)(st, &ref->snap[(size_t)b * a->n_blocks + j]);
            frozen.k = ref->k + r0 * kvd; frozen.v = ref->v + r0 * kvd; frozen.g = ref->gate + r0; frozen.pos0 = pos0;
        }
        FN(bank_write_block)(st, c, k + (size_t)t0 * kvd, v + (size_t)t0 * kvd, a->gate + r0 + t0, pos0 + t0, nb, w->eta,
                             a->wlog ? &a->wlog[(size_t)b * a->n_blocks + j] : NULL,
                             ref && c->detach_evicted ? &frozen : NULL);
    }
}

// Attention layer forward for B rows x T tokens of x [B*T, D] -> y [B*T, D] (y may be NULL: no output).
// Bounded layers: states[B] are the persistent states (inference: chunked prefill, docs/spec.md §2.3); with
// states == NULL each row starts from a fresh zero state and the tape for the backward is recorded
// (training, docs/spec.md §2.5). Unbounded layers ignore states.
static void FN(attn_forward)(const FN(AttnWeights)* w, const ModelConfig* c, FN(AttnActs)* a, const REAL* x, int B, int T,
                             FN(BankState)* states, int write_cache, REAL* y) {
    int n = B * T;
    FN(attn_project)(w, c, x, n, a->q, a->k, a->v, a->lam, a->gate);
    FN(BankState) fresh;
    int training = c->bounded && !states;
    if (training) FN(bank_alloc)(&fresh, c);
    for (int b = 0; b < B; b++) {
        FN(BankState)* st = NULL;
        if (c->bounded) {
            st = training ? &fresh : &states[b];
            if (training) FN(bank_reset)(st, MEM_INIT_ZEROS, 0);
        }
        FN(attn_row_forward)(w, c, a, b, st, write_cache);
    }
    if (training) FN(bank_free)(&fresh);
    FN(combine_forward)(w, c, a->a_sig, a->a_noise, a->lam, a->o, a->hn_rstd, a->out, n);
    if (y) FN(matmul_forward)(y, a->out, w->wo, NULL, n, config_qdim(c), c->dim);
}

// docs/spec.md §2.4: one token x [D] of one row through a bounded layer: write first (may evict into the
// banks), then attend over the state's slots (the ring now holds this token). y [D].
static void FN(attn_decode)(const FN(AttnWeights)* w, const ModelConfig* c, FN(BankState)* st, const REAL* x, REAL* y) {
    int H = c->n_heads, Dh = c->head_dim, qd = config_qdim(c), kvd = config_kvdim(c);
    REAL* buf = (REAL*)coda_calloc_or_die((size_t)(6 * qd + 2 * kvd + 2 * H + 2 + Dh), sizeof(REAL), "decode step");
    REAL *q = buf, *qn = q + qd, *as = qn + qd, *an = as + qd, *o = an + qd, *out = o + qd, *k = out + qd, *v = k + kvd;
    REAL *lam = v + kvd, *rstd = lam + H, *gate = rstd + H, *cs = gate + 2, *sn = cs + Dh / 2;
    FN(attn_project)(w, c, x, 1, q, k, v, lam, gate);
    FN(rope_tables)(cs, sn, st->pos, 1, Dh, config_rope_base(c), c->rope_bf16_positions);
    FN(rope_apply)(q, cs, sn, 1, H, Dh, c->rope_layout, +1);
    FN(rope_apply)(k, cs, sn, 1, c->n_kv_heads, Dh, c->rope_layout, +1);
    if (c->differential) FN(noise_rotate)(qn, q, w->theta, 1, H, Dh, +1);
    FN(bank_write_one)(st, c, k, v, gate[0], w->eta);
    FN(KeySet) ks;
    FN(keyset_build)(&ks, c, st, NULL, NULL, 0, 0);
    FN(attend_forward)(c, &ks, q, qn, 1, as, an);
    FN(keyset_free)(&ks);
    FN(combine_forward)(w, c, as, an, lam, o, rstd, out, 1);
    FN(matmul_forward)(y, out, w->wo, NULL, 1, qd, c->dim);
    free(buf);
}

// ---------------------------------------------------------------------------------------------
// Backward

// Whether a state entry that came from token `tok` (row index) may pass gradient into it when block
// j attends to it. Without cross-block gradients the state is cut at every block boundary, so only
// entries written from the previous block's own tokens carry gradient (docs/spec.md §4, §11.1).
static int FN(state_grad_flows)(const ModelConfig* c, int tok, int j) {
    return c->cross_block_grad || tok >= (j - 1) * c->block_size;
}

// Summary-bank backward through the write of block j: dsum [Hkv][Ms][Dh] x2 holds dL/d(bank after the
// write) and becomes dL/d(bank before it) (zero when cross-block gradients are off). Token gradients
// go to dk/dv ([T][Hkv*Dh], RoPE'd) and dgate [T] of the candidates; eta gradients to deta [Hkv].
static void FN(summary_write_backward)(const ModelConfig* c, const FN(BankState)* before, const FN(WriteLog)* log, int j,
                                       int64_t pos0, const REAL* k_rows, const REAL* v_rows, const REAL* eta_logit,
                                       REAL* dsum_k, REAL* dsum_v, REAL* dk, REAL* dv, REAL* dgate, REAL* deta) {
    int Hkv = c->n_kv_heads, Dh = c->head_dim, lf = Dh / 2, Ms = c->n_summary, kvd = Hkv * Dh, s0 = c->window + c->n_exact;
    REAL escale = sqrt((REAL)Dh / (REAL)(Dh - lf));
    REAL* avg = (REAL*)coda_malloc_or_die(sizeof(REAL) * 4 * Dh, "summary backward");
    REAL *avgk = avg, *avgv = avg + Dh, *davk = avg + 2 * Dh, *davv = avg + 3 * Dh;
    for (int m = 0; m < Ms; m++) {
        if (!log->slot_active[m]) continue;  // untouched slot: gradient passes through unchanged
        REAL cnt = log->slot_cnt[m], denom = cnt > (REAL)1e-6 ? cnt : (REAL)1e-6;
        for (int g = 0; g < Hkv; g++) {
            REAL* dnk = dsum_k + ((size_t)g * Ms + m) * Dh;
            REAL* dnv = dsum_v + ((size_t)g * Ms + m) * Dh;
            const REAL* oldk = FN(bank_k)(before, g, s0 + m);
            const REAL* oldv = FN(bank_v)(before, g, s0 + m);
            memset(avgk, 0, sizeof(REAL) * 2 * Dh);
            for (int t = 0; t < log->n_cand; t++) {
                if (log->cand_slot[t] != m || log->cand_w[t] == 0) continue;
                size_t row = (size_t)(log->cand_pos[t] - pos0) * kvd + g * Dh;
                for (int d = 0; d < Dh; d++) { avgk[d] += log->cand_w[t] * k_rows[row + d] / denom; avgv[d] += log->cand_w[t] * v_rows[row + d] / denom; }
            }
            REAL eta = log->slot_new[m] ? (REAL)1 : FN(sigmoid)(eta_logit[g]), de = 0;
            for (int d = 0; d < Dh; d++) {
                davk[d] = d >= lf ? eta * escale * dnk[d] : (REAL)0;
                davv[d] = eta * dnv[d];
                if (d >= lf) de += dnk[d] * (escale * avgk[d] - oldk[d]);
                de += dnv[d] * (avgv[d] - oldv[d]);
            }
            if (!log->slot_new[m]) deta[g] += de * eta * ((REAL)1 - eta);
            for (int t = 0; t < log->n_cand; t++) {
                if (log->cand_slot[t] != m || log->cand_w[t] == 0) continue;
                int tok = (int)(log->cand_pos[t] - pos0);
                if (c->detach_evicted || !(c->cross_block_grad || tok >= j * c->block_size)) continue;
                REAL wt = log->cand_w[t], dw = 0;
                size_t row = (size_t)tok * kvd + g * Dh;
                for (int d = 0; d < Dh; d++) {
                    dk[row + d] += wt / denom * davk[d];
                    dv[row + d] += wt / denom * davv[d];
                    // d avg / d w_t = (x_t - avg) / cnt (or x_t / 1e-6 when the count is clamped)
                    REAL xk = k_rows[row + d], xv = v_rows[row + d];
                    dw += davk[d] * (cnt > (REAL)1e-6 ? xk - avgk[d] : xk) / denom + davv[d] * (cnt > (REAL)1e-6 ? xv - avgv[d] : xv) / denom;
                }
                if (c->write_policy == WRITE_POLICY_GATED) dgate[tok] += dw;  // w_t = g_t when kept
            }
            for (int d = 0; d < Dh; d++) {  // gradient into the bank before the write
                dnk[d] = d >= lf ? ((REAL)1 - eta) * dnk[d] : dnk[d];
                dnv[d] = ((REAL)1 - eta) * dnv[d];
            }
        }
    }
    if (!c->cross_block_grad) {
        memset(dsum_k, 0, sizeof(REAL) * (size_t)Hkv * Ms * Dh);
        memset(dsum_v, 0, sizeof(REAL) * (size_t)Hkv * Ms * Dh);
    }
    free(avg);
}

// Scatters key-set gradients to their sources: block keys and ring/exact slots to token rows, summary
// slots into dsum. Block j of this row starts at token t0.
static void FN(keyset_scatter)(const ModelConfig* c, const FN(KeySet)* ks, const FN(BankState)* st, int j, int t0,
                               int64_t pos0, const REAL* dK, const REAL* dV, REAL* dk, REAL* dv, REAL* dsum_k, REAL* dsum_v) {
    int Hkv = c->n_kv_heads, Dh = c->head_dim, kvd = Hkv * Dh, n = ks->P + ks->nb, W = c->window, Me = c->n_exact;
    for (int g = 0; g < Hkv; g++) {
        for (int i = 0; i < n; i++) {
            const REAL* gk = dK + ((size_t)g * n + i) * Dh;
            const REAL* gv = dV + ((size_t)g * n + i) * Dh;
            REAL *tk = NULL, *tv = NULL;
            if (i >= ks->P) {
                size_t row = (size_t)(t0 + i - ks->P) * kvd + g * Dh;
                tk = dk + row; tv = dv + row;
            } else {
                int s = ks->slot[i];
                if (s < W + Me) {  // ring or exact slot: a copy of one token
                    int64_t p = st->src[s];
                    int tok = (int)(p - pos0);
                    int flows = p >= 0 && FN(state_grad_flows)(c, tok, j) && (s < W || !c->detach_evicted);
                    if (flows) { tk = dk + (size_t)tok * kvd + g * Dh; tv = dv + (size_t)tok * kvd + g * Dh; }
                } else {
                    size_t off = ((size_t)g * c->n_summary + (s - W - Me)) * Dh;
                    tk = dsum_k + off; tv = dsum_v + off;
                }
            }
            if (!tk) continue;  // constant (unused slot, detached entry)
            for (int d = 0; d < Dh; d++) { tk[d] += gk[d]; tv[d] += gv[d]; }
        }
    }
}

// Attention layer backward (training forward must have run with states == NULL for bounded layers).
// dy [B*T, D] -> accumulates dx [B*T, D] and the weight gradients in g (fields may be NULL: frozen).
static void FN(attn_backward)(const FN(AttnWeights)* w, const FN(AttnWeights)* g, const ModelConfig* c, const FN(AttnActs)* a,
                              const REAL* x, const REAL* dy, REAL* dx) {
    int B = a->B, T = a->T, n = B * T, H = c->n_heads, Dh = c->head_dim, D = c->dim, qd = config_qdim(c), kvd = config_kvdim(c);
    size_t nqd = (size_t)n * qd, nkvd = (size_t)n * kvd;
    REAL* buf = (REAL*)coda_calloc_or_die(5 * nqd + 2 * nkvd + (size_t)n * (H + 1), sizeof(REAL), "attention backward");
    REAL *dout = buf, *dsig = dout + nqd, *dnoise = dsig + nqd, *dq = dnoise + nqd, *dqn = dq + nqd;
    REAL *dk = dqn + nqd, *dv = dk + nkvd, *dlam = dv + nkvd, *dgate = dlam + (size_t)n * H;
    // o_proj
    FN(matmul_backward)(dout, g->wo, NULL, dy, a->out, w->wo, n, qd, D);
    // head norm and stream combination
    REAL* do_ = dsig;  // d o, then split into the two streams
    if (c->differential && c->head_norm == HEAD_NORM_FULL)
        FN(rmsnorm_backward)(do_, g->head_norm, dout, a->o, w->head_norm, a->hn_rstd, n * H, Dh);
    else
        memcpy(do_, dout, sizeof(REAL) * nqd);
    if (c->differential) {
        for (size_t th = 0; th < (size_t)n * H; th++) {
            REAL dl = 0;
            for (int e = 0; e < Dh; e++) {
                size_t i = th * Dh + e;
                dnoise[i] = -a->lam[th] * do_[i];
                dl -= do_[i] * a->a_noise[i];
            }
            dlam[th] = dl * a->lam[th] * ((REAL)1 - a->lam[th]);  // through the sigmoid
        }
    }
    // attention, row by row
    int Ms = c->n_summary > 0 ? c->n_summary : 1;
    REAL* dsum = (REAL*)coda_malloc_or_die(sizeof(REAL) * 2 * (size_t)c->n_kv_heads * Ms * Dh, "summary gradients");
    REAL* deta = (REAL*)coda_calloc_or_die((size_t)c->n_kv_heads, sizeof(REAL), "eta gradients");
    for (int b = 0; b < B; b++) {
        size_t r0 = (size_t)b * T;
        const REAL *q = a->q + r0 * qd, *qn = a->qn + r0 * qd, *k = a->k + r0 * kvd, *v = a->v + r0 * kvd;
        REAL *dkb = dk + r0 * kvd, *dvb = dv + r0 * kvd;
        if (!c->bounded) {
            FN(KeySet) ks;
            FN(keyset_build)(&ks, c, NULL, k, v, 0, T);
            REAL* dK = (REAL*)coda_calloc_or_die(2 * (size_t)c->n_kv_heads * T * Dh, sizeof(REAL), "key gradients");
            FN(attend_backward)(c, &ks, q, qn, T, dsig + r0 * qd, dnoise + r0 * qd, dq + r0 * qd, dqn + r0 * qd, dK,
                                dK + (size_t)c->n_kv_heads * T * Dh);
            FN(keyset_scatter)(c, &ks, NULL, 0, 0, 0, dK, dK + (size_t)c->n_kv_heads * T * Dh, dkb, dvb, NULL, NULL);
            free(dK);
            FN(keyset_free)(&ks);
            continue;
        }
        memset(dsum, 0, sizeof(REAL) * 2 * (size_t)c->n_kv_heads * Ms * Dh);
        REAL *dsk = dsum, *dsv = dsum + (size_t)c->n_kv_heads * Ms * Dh;
        for (int j = a->n_blocks - 1; j >= 0; j--) {
            const FN(BankState)* st = &a->snap[(size_t)b * a->n_blocks + j];
            int t0 = j * c->block_size, nb = T - t0 < c->block_size ? T - t0 : c->block_size;
            // 1. through the write of block j (its result was attended by blocks j+1...)
            if (c->n_summary > 0)
                FN(summary_write_backward)(c, st, &a->wlog[(size_t)b * a->n_blocks + j], j, a->pos0[b], k, v, w->eta, dsk, dsv,
                                           dkb, dvb, dgate + r0, deta);
            // 2. block j's attention over the state it saw and its own keys
            FN(KeySet) ks;
            FN(keyset_build)(&ks, c, st, k, v, t0, nb);
            size_t nk = (size_t)c->n_kv_heads * (ks.P + nb) * Dh;
            REAL* dK = (REAL*)coda_calloc_or_die(2 * nk, sizeof(REAL), "key gradients");
            FN(attend_backward)(c, &ks, q + (size_t)t0 * qd, qn + (size_t)t0 * qd, nb, dsig + (r0 + t0) * qd,
                                dnoise + (r0 + t0) * qd, dq + (r0 + t0) * qd, dqn + (r0 + t0) * qd, dK, dK + nk);
            FN(keyset_scatter)(c, &ks, st, j, t0, a->pos0[b], dK, dK + nk, dkb, dvb, dsk, dsv);
            free(dK);
            FN(keyset_free)(&ks);
        }
    }
    if (g->eta) for (int h = 0; h < c->n_kv_heads; h++) g->eta[h] += deta[h];
    free(dsum);
    free(deta);
    // noise rotation: qn = R(theta) q  =>  dq += R(theta)^T dqn ; dtheta from the rotation's derivative
    if (c->differential) {
        REAL* tmp = dout;  // free again
        FN(noise_rotate)(tmp, dqn, w->theta, n, H, Dh, -1);
        for (size_t i = 0; i < nqd; i++) dq[i] += tmp[i];
        if (g->theta)
            for (int t = 0; t < n; t++)
                for (int h = 0; h < H; h++)
                    for (int jj = 0; jj < Dh / 2; jj++) {
                        size_t i = ((size_t)t * H + h) * Dh + 2 * jj;
                        REAL th = w->theta[h * (Dh / 2) + jj], cs = cos(th), sn = sin(th), x0 = a->q[i], x1 = a->q[i + 1];
                        g->theta[h * (Dh / 2) + jj] += dqn[i] * (-x0 * sn - x1 * cs) + dqn[i + 1] * (x0 * cs - x1 * sn);
                    }
    }
    // RoPE backward (inverse rotation) on dq and dk, per row's tables
    for (int b = 0; b < B; b++) {
        size_t r0 = (size_t)b * T;
        const REAL *cs = a->cosv + r0 * (Dh / 2), *sn = a->sinv + r0 * (Dh / 2);
        FN(rope_apply)(dq + r0 * qd, cs, sn, T, H, Dh, c->rope_layout, -1);
        FN(rope_apply)(dk + r0 * kvd, cs, sn, T, c->n_kv_heads, Dh, c->rope_layout, -1);
    }
    // projections
    FN(matmul_backward)(dx, g->wq, NULL, dq, x, w->wq, n, D, qd);
    FN(matmul_backward)(dx, g->wk, NULL, dk, x, w->wk, n, D, kvd);
    FN(matmul_backward)(dx, g->wv, NULL, dv, x, w->wv, n, D, kvd);
    if (c->differential) FN(matmul_backward)(dx, g->lam_w, g->lam_b, dlam, x, w->lam_w, n, D, H);
    if (c->bounded && c->write_policy == WRITE_POLICY_GATED) {
        for (int t = 0; t < n; t++) dgate[t] *= a->gate[t] * ((REAL)1 - a->gate[t]);
        FN(matmul_backward)(dx, g->write_w, g->write_b, dgate, x, w->write_w, n, D, 1);
    }
    free(buf);
}

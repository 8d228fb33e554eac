// llmc/cpu/banks.h — the bounded KV state of one layer and one batch row (docs/spec.md §2.1) and its
// updates: block write (prefill, §3.1 with §3.3 exact and §3.4 summary bank updates) and single-token
// write (decode, §3.2 with §3.5, §3.6). Type-generic (REAL, FN): see llmc/cpu/reference.h.
//
// Layout: k, v are [Hkv][slots][Dh] with slots = ring [0, W) | exact bank [W, W+Me) | summary bank
// [W+Me, W+Me+Ms). Keys are stored RoPE'd ("RoPE at write"). src[slot] is the absolute position of the
// token a ring or exact slot holds (-1: empty, or a summary slot): the training backward uses it to
// send a slot's gradient to the token it came from. The reference's normalised-vector caches are
// derived data (docs/spec.md §2.1) and are recomputed on the fly here.

typedef struct {
    int W, Me, Ms, Hkv, Dh, slots;
    REAL* k;               // [Hkv][slots][Dh]
    REAL* v;               // [Hkv][slots][Dh]
    unsigned char* allowed;  // [slots] slot may be attended (ring: filled; banks: used)
    REAL* g_ring;          // [W] write gate of the token in each ring slot
    int64_t* src;          // [slots] position of the token held (ring, exact), -1 otherwise
    int64_t* last_exact;   // [Me] LRU timestamp (position) per exact slot
    int recent_idx;        // ring slot of the oldest token when the ring is full
    int recent_filled;     // filled ring slots
    int64_t pos;           // position of the next token
} FN(BankState);

// What a block write did, for the training backward (docs/spec.md §4): the summary-bank candidates with their
// route and weight, and per summary slot whether it was updated and with which eta.
typedef struct {
    int n_cand;            // summary candidates (Ts)
    int64_t* cand_pos;     // [Ts] position of each candidate token
    int* cand_slot;        // [Ts] summary slot it was routed to
    REAL* cand_w;          // [Ts] its averaging weight (gate if kept, 0 if not; 1 with write_policy none)
    unsigned char* slot_active;  // [Ms] received weight > 0
    unsigned char* slot_new;     // [Ms] was unused before and overwritten (eta_eff = 1)
    REAL* slot_cnt;        // [Ms] total weight
} FN(WriteLog);

static inline REAL* FN(bank_k)(const FN(BankState)* st, int g, int slot) { return st->k + ((size_t)g * st->slots + slot) * st->Dh; }
static inline REAL* FN(bank_v)(const FN(BankState)* st, int g, int slot) { return st->v + ((size_t)g * st->slots + slot) * st->Dh; }

static void FN(bank_alloc)(FN(BankState)* st, const ModelConfig* c) {
    memset(st, 0, sizeof(*st));
    st->W = c->window; st->Me = c->n_exact; st->Ms = c->n_summary;
    st->Hkv = c->n_kv_heads; st->Dh = c->head_dim; st->slots = config_state_slots(c);
    size_t kv = (size_t)st->Hkv * st->slots * st->Dh;
    st->k = (REAL*)coda_calloc_or_die(kv, sizeof(REAL), "bank keys");
    st->v = (REAL*)coda_calloc_or_die(kv, sizeof(REAL), "bank values");
    st->allowed = (unsigned char*)coda_calloc_or_die((size_t)st->slots, 1, "bank mask");
    st->g_ring = (REAL*)coda_calloc_or_die((size_t)st->W, sizeof(REAL), "ring gates");
    st->src = (int64_t*)coda_malloc_or_die(sizeof(int64_t) * (size_t)st->slots, "slot sources");
    st->last_exact = (int64_t*)coda_calloc_or_die((size_t)(st->Me ? st->Me : 1), sizeof(int64_t), "LRU stamps");
    for (int s = 0; s < st->slots; s++) st->src[s] = -1;
}

static void FN(bank_free)(FN(BankState)* st) {
    free(st->k); free(st->v); free(st->allowed); free(st->g_ring); free(st->src); free(st->last_exact);
    memset(st, 0, sizeof(*st));
}

// Empty state. MEM_INIT_RANDOM_NORMAL fills the (never attended, but routed-against) bank contents
// with N(0, 0.02^2) in the reference's order: exact k, exact v, summary k (dims [Dh/2, Dh) only),
// summary v. Summary key dims [0, Dh/2) are zero and stay zero forever (docs/spec.md §3.4).
static void FN(bank_reset)(FN(BankState)* st, MemInit init, uint64_t seed) {
    size_t kv = (size_t)st->Hkv * st->slots * st->Dh;
    memset(st->k, 0, kv * sizeof(REAL));
    memset(st->v, 0, kv * sizeof(REAL));
    memset(st->allowed, 0, (size_t)st->slots);
    memset(st->g_ring, 0, (size_t)st->W * sizeof(REAL));
    for (int s = 0; s < st->slots; s++) st->src[s] = -1;
    memset(st->last_exact, 0, sizeof(int64_t) * (size_t)(st->Me ? st->Me : 1));
    st->recent_idx = st->recent_filled = 0;
    st->pos = 0;
    if (init != MEM_INIT_RANDOM_NORMAL) return;
    Rng rng;
    rng_seed(&rng, seed);
    int lf = st->Dh / 2, e0 = st->W, s0 = st->W + st->Me;
    for (int pass = 0; pass < 4; pass++) {
        REAL* buf = (pass == 0 || pass == 2) ? st->k : st->v;
        int first = pass < 2 ? e0 : s0, n = pass < 2 ? st->Me : st->Ms, d0 = pass == 2 ? lf : 0;
        for (int g = 0; g < st->Hkv; g++)
            for (int m = 0; m < n; m++)
                for (int d = d0; d < st->Dh; d++)
                    buf[((size_t)g * st->slots + first + m) * st->Dh + d] = (REAL)(0.02 * rng_normal(&rng));
    }
}

static void FN(bank_copy)(FN(BankState)* dst, const FN(BankState)* src) {
    size_t kv = (size_t)src->Hkv * src->slots * src->Dh;
    memcpy(dst->k, src->k, kv * sizeof(REAL));
    memcpy(dst->v, src->v, kv * sizeof(REAL));
    memcpy(dst->allowed, src->allowed, (size_t)src->slots);
    memcpy(dst->g_ring, src->g_ring, (size_t)src->W * sizeof(REAL));
    memcpy(dst->src, src->src, sizeof(int64_t) * (size_t)src->slots);
    memcpy(dst->last_exact, src->last_exact, sizeof(int64_t) * (size_t)(src->Me ? src->Me : 1));
    dst->recent_idx = src->recent_idx;
    dst->recent_filled = src->recent_filled;
    dst->pos = src->pos;
}

// Cosine between a and b over n dims, each normalised by max(||x||, 1e-6) (docs/spec.md §3).
static REAL FN(cosine)(const REAL* a, const REAL* b, int n) {
    REAL aa = 0, bb = 0, ab = 0;
    for (int i = 0; i < n; i++) { aa += a[i] * a[i]; bb += b[i] * b[i]; ab += a[i] * b[i]; }
    REAL na = sqrt(aa), nb = sqrt(bb);
    na = na > (REAL)1e-6 ? na : (REAL)1e-6;
    nb = nb > (REAL)1e-6 ? nb : (REAL)1e-6;
    return ab / (na * nb);
}

// A token about to enter a bank: its k and v as [Hkv][Dh] (head-major, like a row of k_proj output),
// its write gate and its position.
typedef struct {
    const REAL* k;
    const REAL* v;
    REAL g;
    int64_t pos;
} FN(Evicted);

static int FN(keeps)(const ModelConfig* c, REAL g, float threshold) {
    return c->write_policy == WRITE_POLICY_NONE || (float)g >= threshold;
}

// Exact bank, value routing: mean over KV heads of cos(v_token, v_slot).
static REAL FN(exact_score)(const FN(BankState)* st, const FN(Evicted)* e, int m) {
    REAL s = 0;
    for (int g = 0; g < st->Hkv; g++) s += FN(cosine)(e->v + (size_t)g * st->Dh, FN(bank_v)(st, g, st->W + m), st->Dh);
    return s / st->Hkv;
}
// Summary bank, LF-key routing: mean over KV heads of cos(k_token[lf:], k_slot[lf:]).
static REAL FN(summary_score)(const FN(BankState)* st, const FN(Evicted)* e, int m) {
    int lf = st->Dh / 2;
    REAL s = 0;
    for (int g = 0; g < st->Hkv; g++)
        s += FN(cosine)(e->k + (size_t)g * st->Dh + lf, FN(bank_k)(st, g, st->W + st->Me + m) + lf, st->Dh - lf);
    return s / st->Hkv;
}

static void FN(exact_write_slot)(FN(BankState)* st, int m, const FN(Evicted)* e) {
    for (int g = 0; g < st->Hkv; g++) {
        memcpy(FN(bank_k)(st, g, st->W + m), e->k + (size_t)g * st->Dh, sizeof(REAL) * st->Dh);
        memcpy(FN(bank_v)(st, g, st->W + m), e->v + (size_t)g * st->Dh, sizeof(REAL) * st->Dh);
    }
    st->allowed[st->W + m] = 1;
    st->src[st->W + m] = e->pos;
}

// docs/spec.md §3.3: exact-bank update with the block's first Te candidates (candidate order). Every decision
// is taken against the bank as it was before the block; writes are applied afterwards.
static void FN(exact_update_block)(FN(BankState)* st, const ModelConfig* c, const FN(Evicted)* cand, int Te) {
    int Me = st->Me;
    if (Me <= 0 || Te == 0) return;
    const unsigned char* used = st->allowed + st->W;
    int any_used = 0;
    for (int m = 0; m < Me; m++) any_used |= used[m];
    // LRU victims: free slots first (lowest index first), then used slots by oldest stamp.
    int* order = (int*)coda_malloc_or_die(sizeof(int) * (size_t)Me, "LRU order");
    for (int m = 0; m < Me; m++) order[m] = m;
    for (int i = 1; i < Me; i++) {  // insertion sort by (key, index): Me is small
        int m = order[i], j = i - 1;
        int64_t km = used[m] ? st->last_exact[m] : INT64_MIN;
        while (j >= 0) {
            int o = order[j];
            int64_t ko = used[o] ? st->last_exact[o] : INT64_MIN;
            if (ko > km || (ko == km && o > m)) { order[j + 1] = o; j--; }
            else break;
        }
        order[j + 1] = m;
    }
    int n_lru = Te < Me ? Te : Me;
    int* target = (int*)coda_malloc_or_die(sizeof(int) * Te, "exact targets");
    unsigned char* overwrite = (unsigned char*)coda_calloc_or_die((size_t)Te, 1, "exact overwrite");
    unsigned char* touch = (unsigned char*)coda_calloc_or_die((size_t)Te, 1, "exact touch");
    int n_novel_kept = 0;
    for (int t = 0; t < Te; t++) {
        int keep = FN(keeps)(c, cand[t].g, c->gate_threshold_exact);
        REAL best = (REAL)-1e9;
        int bidx = 0;
        for (int m = 0; m < Me; m++) {
            if (!used[m]) continue;
            REAL s = FN(exact_score)(st, &cand[t], m);
            if (s > best) { best = s; bidx = m; }
        }
        int novel = !any_used || best < (REAL)c->exact_novelty_threshold;
        int hit = any_used && best >= (REAL)c->exact_match_threshold;
        int nk = novel && keep;
        int rank = nk ? n_novel_kept++ : -1;
        int cap = nk && rank < n_lru;
        target[t] = cap ? order[rank] : bidx;
        touch[t] = keep && (!novel || cap);
        overwrite[t] = cap || (c->exact_refresh_on_hit && keep && hit);
    }
    // Stamps: the newest touching position per slot.
    int64_t* stamp = (int64_t*)coda_malloc_or_die(sizeof(int64_t) * Me, "exact stamps");
    for (int m = 0; m < Me; m++) stamp[m] = INT64_MIN;
    for (int t = 0; t < Te; t++)
        if (touch[t] && cand[t].pos > stamp[target[t]]) stamp[target[t]] = cand[t].pos;
    // Writes. Novel inserts hit distinct slots. With refresh_on_hit several candidates may write one
    // slot: the newest token wins (the reference adds the deltas, docs/spec.md §11.7 -- a defect not copied).
    for (int t = 0; t < Te; t++) {
        if (!overwrite[t]) continue;
        int newest = 1;
        for (int u = 0; u < Te; u++)
            if (u != t && overwrite[u] && target[u] == target[t] && cand[u].pos > cand[t].pos) newest = 0;
        if (newest) FN(exact_write_slot)(st, target[t], &cand[t]);
    }
    for (int m = 0; m < Me; m++)
        if (stamp[m] != INT64_MIN) st->last_exact[m] = stamp[m];
    free(order); free(target); free(overwrite); free(touch); free(stamp);
}

// docs/spec.md §3.4: summary-bank update with the block's first Ts candidates: hard LF-key routing over all
// slots, gate-weighted average per slot, then an EMA with eta = sigmoid(eta_logit[g]) per KV head (1
// for a slot filled for the first time) on key dims [Dh/2, Dh) (scaled by sqrt(Dh/(Dh - Dh/2))) and
// all value dims. log (may be NULL) records what the training backward needs.
static void FN(summary_update_block)(FN(BankState)* st, const ModelConfig* c, const FN(Evicted)* cand, int Ts,
                                     const REAL* eta_logit, FN(WriteLog)* log) {
    int Ms = st->Ms, Dh = st->Dh, lf = Dh / 2, s0 = st->W + st->Me;
    if (log) {  // a write without summary candidates leaves every slot untouched
        log->n_cand = 0;
        for (int m = 0; m < Ms; m++) { log->slot_active[m] = 0; log->slot_new[m] = 0; log->slot_cnt[m] = 0; }
    }
    if (Ms == 0 || Ts == 0) return;
    REAL escale = sqrt((REAL)Dh / (REAL)(Dh - lf));
    int* route = (int*)coda_malloc_or_die(sizeof(int) * Ts, "summary routes");
    REAL* w = (REAL*)coda_malloc_or_die(sizeof(REAL) * Ts, "summary weights");
    REAL* cnt = (REAL*)coda_calloc_or_die((size_t)Ms, sizeof(REAL), "summary counts");
    for (int t = 0; t < Ts; t++) {
        REAL best = 0;
        int r = 0;
        for (int m = 0; m < Ms; m++) {
            REAL s = FN(summary_score)(st, &cand[t], m);
            if (m == 0 || s > best) { best = s; r = m; }
        }
        route[t] = r;
        w[t] = c->write_policy == WRITE_POLICY_NONE ? (REAL)1
               : (FN(keeps)(c, cand[t].g, c->gate_threshold_summary) ? cand[t].g : (REAL)0);
        cnt[r] += w[t];
    }
    size_t gd = (size_t)Ms * Dh;
    REAL* sk = (REAL*)coda_calloc_or_die((size_t)st->Hkv * gd, sizeof(REAL), "summary sums");
    REAL* sv = (REAL*)coda_calloc_or_die((size_t)st->Hkv * gd, sizeof(REAL), "summary sums");
    for (int t = 0; t < Ts; t++)  // accumulate in candidate order (deterministic)
        for (int g = 0; g < st->Hkv; g++)
            for (int d = 0; d < Dh; d++) {
                sk[g * gd + (size_t)route[t] * Dh + d] += w[t] * cand[t].k[(size_t)g * Dh + d];
                sv[g * gd + (size_t)route[t] * Dh + d] += w[t] * cand[t].v[(size_t)g * Dh + d];
            }
    for (int m = 0; m < Ms; m++) {
        int active = cnt[m] > 0, is_new = active && c->summary_overwrite_on_insert && !st->allowed[s0 + m];
        if (log) { log->slot_active[m] = (unsigned char)active; log->slot_new[m] = (unsigned char)is_new; log->slot_cnt[m] = cnt[m]; }
        if (!active) continue;
        REAL denom = cnt[m] > (REAL)1e-6 ? cnt[m] : (REAL)1e-6;
        for (int g = 0; g < st->Hkv; g++) {
            REAL eta = is_new ? (REAL)1 : FN(sigmoid)(eta_logit[g]);
            REAL* mk = FN(bank_k)(st, g, s0 + m);
            REAL* mv = FN(bank_v)(st, g, s0 + m);
            for (int d = lf; d < Dh; d++) mk[d] += eta * (escale * sk[g * gd + (size_t)m * Dh + d] / denom - mk[d]);
            for (int d = 0; d < Dh; d++) mv[d] += eta * (sv[g * gd + (size_t)m * Dh + d] / denom - mv[d]);
        }
        st->allowed[s0 + m] = 1;
    }
    if (log) {
        log->n_cand = Ts;
        for (int t = 0; t < Ts; t++) { log->cand_pos[t] = cand[t].pos; log->cand_slot[t] = route[t]; log->cand_w[t] = w[t]; }
    }
    free(route); free(w); free(cnt); free(sk); free(sv);
}

// The reference's candidate list (docs/spec.md §3.1, PyTorch CUDA top-k): with v* the T-th largest gate, all
// tokens with gate > v* in ascending index, then tokens with gate == v* in ascending index until T are
// taken. Each bank takes a prefix of this one list.
static void FN(topk_reference_order)(const REAL* gates, int n, int T, int* out) {
    REAL* sorted = (REAL*)coda_malloc_or_die(sizeof(REAL) * n, "top-k scratch");
    memcpy(sorted, gates, sizeof(REAL) * n);
    for (int i = 1; i < n; i++) {  // descending insertion sort: n <= W + block
        REAL x = sorted[i];
        int j = i - 1;
        while (j >= 0 && sorted[j] < x) { sorted[j + 1] = sorted[j]; j--; }
        sorted[j + 1] = x;
    }
    REAL vstar = sorted[T - 1];
    int k = 0;
    for (int i = 0; i < n && k < T; i++) if (gates[i] > vstar) out[k++] = i;
    for (int i = 0; i < n && k < T; i++) if (gates[i] == vstar) out[k++] = i;
    free(sorted);
}

// coda.c's default order (CAND_ORDER_BY_GATE): the T highest gates, highest first, ties by ascending
// index. Every prefix of this list is a bank's highest-gated candidates.
static void FN(topk_by_gate)(const REAL* gates, int n, int T, int* out) {
    int k = 0;
    for (int i = 0; i < n; i++) {  // insertion into the sorted prefix out[0..k): stable, so ties keep index order
        if (k == T && !(gates[i] > gates[out[T - 1]])) continue;
        int j = k < T ? k++ : T - 1;
        while (j > 0 && gates[i] > gates[out[j - 1]]) { out[j] = out[j - 1]; j--; }
        out[j] = i;
    }
}

static void FN(topk_candidates)(const ModelConfig* c, const REAL* gates, int n, int T, int* out) {
    if (c->candidate_order == CAND_ORDER_REFERENCE) FN(topk_reference_order)(gates, n, T, out);
    else FN(topk_by_gate)(gates, n, T, out);
}

// Token values held constant for a finite-difference check of a detached gradient: candidates read
// their k, v and gate from these rows (position pos0 = row 0) instead of the live values.
typedef struct {
    const REAL *k, *v, *g;
    int64_t pos0;
} FN(FrozenRows);

// docs/spec.md §3.1: write a block of blk tokens (k, v: [blk][Hkv*Dh] RoPE'd; g: [blk]) at positions pos0...
// The ring's old tokens followed by the block form one chronological sequence; its oldest tokens
// beyond W are evicted, the top-T by gate become bank candidates, the newest min(W, total) refill the
// ring from slot 0.
static void FN(bank_write_block)(FN(BankState)* st, const ModelConfig* c, const REAL* kb, const REAL* vb, const REAL* gb,
                                 int64_t pos0, int blk, const REAL* eta_logit, FN(WriteLog)* log,
                                 const FN(FrozenRows)* frozen) {
    int W = st->W, Lr = st->recent_filled, total = Lr + blk, kvd = st->Hkv * st->Dh, Dh = st->Dh;
    REAL* ck = (REAL*)coda_malloc_or_die(sizeof(REAL) * (size_t)total * kvd, "block write keys");
    REAL* cv = (REAL*)coda_malloc_or_die(sizeof(REAL) * (size_t)total * kvd, "block write values");
    REAL* cg = (REAL*)coda_malloc_or_die(sizeof(REAL) * (size_t)total, "block write gates");
    for (int j = 0; j < Lr; j++) {
        int s = Lr == W ? (st->recent_idx + j) % W : j;
        for (int g = 0; g < st->Hkv; g++) {
            memcpy(ck + (size_t)j * kvd + g * Dh, FN(bank_k)(st, g, s), sizeof(REAL) * Dh);
            memcpy(cv + (size_t)j * kvd + g * Dh, FN(bank_v)(st, g, s), sizeof(REAL) * Dh);
        }
        cg[j] = st->g_ring[s];
    }
    memcpy(ck + (size_t)Lr * kvd, kb, sizeof(REAL) * (size_t)blk * kvd);
    memcpy(cv + (size_t)Lr * kvd, vb, sizeof(REAL) * (size_t)blk * kvd);
    memcpy(cg + Lr, gb, sizeof(REAL) * blk);
    int64_t first_pos = pos0 - Lr;  // position of cat[0]
    int keep = total < W ? total : W, evict = total - keep;
    if (log) {  // a write that evicts nothing into the summary bank leaves every slot untouched
        log->n_cand = 0;
        for (int m = 0; m < st->Ms; m++) { log->slot_active[m] = 0; log->slot_new[m] = 0; log->slot_cnt[m] = 0; }
    }
    if (evict > 0) {
        int Te = (st->Me > 0 && c->exact_candidates_per_block > 0) ? (c->exact_candidates_per_block < evict ? c->exact_candidates_per_block : evict) : 0;
        int Ts = (st->Ms > 0 && c->summary_candidates_per_block > 0) ? (c->summary_candidates_per_block < evict ? c->summary_candidates_per_block : evict) : 0;
        int T = Te > Ts ? Te : Ts;
        if (T > 0) {
            int* idx = (int*)coda_malloc_or_die(sizeof(int) * T, "candidates");
            FN(topk_candidates)(c, cg, evict, T, idx);
            FN(Evicted)* cand = (FN(Evicted)*)coda_malloc_or_die(sizeof(FN(Evicted)) * T, "candidates");
            for (int i = 0; i < T; i++) {
                cand[i].pos = first_pos + idx[i];
                if (frozen) {
                    size_t row = (size_t)(cand[i].pos - frozen->pos0);
                    cand[i].k = frozen->k + row * kvd;
                    cand[i].v = frozen->v + row * kvd;
                    cand[i].g = frozen->g[row];
                } else {
                    cand[i].k = ck + (size_t)idx[i] * kvd;
                    cand[i].v = cv + (size_t)idx[i] * kvd;
                    cand[i].g = cg[idx[i]];
                }
            }
            FN(exact_update_block)(st, c, cand, Te);
            FN(summary_update_block)(st, c, cand, Ts, eta_logit, log);
            free(idx);
            free(cand);
        }
    }
    for (int j = 0; j < W; j++) {  // ring rebuild, chronological from slot 0
        int from = evict + j;
        for (int g = 0; g < st->Hkv; g++) {
            REAL* dk = FN(bank_k)(st, g, j);
            REAL* dv = FN(bank_v)(st, g, j);
            if (j < keep) {
                memcpy(dk, ck + (size_t)from * kvd + g * Dh, sizeof(REAL) * Dh);
                memcpy(dv, cv + (size_t)from * kvd + g * Dh, sizeof(REAL) * Dh);
            } else {
                memset(dk, 0, sizeof(REAL) * Dh);
                memset(dv, 0, sizeof(REAL) * Dh);
            }
        }
        st->allowed[j] = j < keep;
        st->g_ring[j] = j < keep ? cg[from] : (REAL)0;
        st->src[j] = j < keep ? first_pos + from : -1;
    }
    st->recent_filled = keep;
    st->recent_idx = 0;
    st->pos = pos0 + blk;
    free(ck); free(cv); free(cg);
}

// docs/spec.md §3.5: exact bank, one evicted token (decode path).
static void FN(exact_update_one)(FN(BankState)* st, const ModelConfig* c, const FN(Evicted)* e) {
    int Me = st->Me;
    if (Me == 0) return;
    const unsigned char* used = st->allowed + st->W;
    int keep = FN(keeps)(c, e->g, c->gate_threshold_exact), any_used = 0, bidx = 0, free_slot = -1;
    REAL best = (REAL)-1e9;
    for (int m = 0; m < Me; m++) {
        any_used |= used[m];
        if (!used[m]) { if (free_slot < 0) free_slot = m; continue; }
        REAL s = FN(exact_score)(st, e, m);
        if (s > best) { best = s; bidx = m; }
    }
    int novel = !any_used || best < (REAL)c->exact_novelty_threshold;
    int hit = any_used && best >= (REAL)c->exact_match_threshold;
    int idx = bidx;
    if (novel) {
        if (free_slot >= 0) idx = free_slot;
        else {
            idx = 0;
            for (int m = 1; m < Me; m++) if (st->last_exact[m] < st->last_exact[idx]) idx = m;
        }
    }
    if ((novel || (c->exact_refresh_on_hit && hit)) && keep) FN(exact_write_slot)(st, idx, e);
    if (keep) st->last_exact[idx] = e->pos;
}

// docs/spec.md §3.6: summary bank, one evicted token (decode path): eta is multiplied by the gate here.
static void FN(summary_update_one)(FN(BankState)* st, const ModelConfig* c, const FN(Evicted)* e, const REAL* eta_logit) {
    int Ms = st->Ms, Dh = st->Dh, lf = Dh / 2, s0 = st->W + st->Me;
    if (Ms == 0) return;
    int keep = FN(keeps)(c, e->g, c->gate_threshold_summary), idx = 0;
    REAL best = 0;
    for (int m = 0; m < Ms; m++) {
        REAL s = FN(summary_score)(st, e, m);
        if (m == 0 || s > best) { best = s; idx = m; }
    }
    REAL escale = sqrt((REAL)Dh / (REAL)(Dh - lf));
    int is_new = c->summary_overwrite_on_insert && !st->allowed[s0 + idx];
    for (int g = 0; g < st->Hkv; g++) {
        REAL eta = FN(sigmoid)(eta_logit[g]) * (c->write_policy == WRITE_POLICY_NONE ? (REAL)1 : e->g);
        if (is_new) eta = 1;
        if (!keep) eta = 0;
        REAL* mk = FN(bank_k)(st, g, s0 + idx);
        REAL* mv = FN(bank_v)(st, g, s0 + idx);
        for (int d = lf; d < Dh; d++) mk[d] += eta * (escale * e->k[(size_t)g * Dh + d] - mk[d]);
        for (int d = 0; d < Dh; d++) mv[d] += eta * (e->v[(size_t)g * Dh + d] - mv[d]);
    }
    if (keep) st->allowed[s0 + idx] = 1;
}

// docs/spec.md §3.2: write one token (k, v: [Hkv*Dh] RoPE'd) at position st->pos.
static void FN(bank_write_one)(FN(BankState)* st, const ModelConfig* c, const REAL* k, const REAL* v, REAL gate,
                               const REAL* eta_logit) {
    int W = st->W, Dh = st->Dh, kvd = st->Hkv * Dh, slot;
    if (st->recent_filled < W) {
        slot = st->recent_filled++;
    } else {
        slot = st->recent_idx;
        REAL* ek = (REAL*)coda_malloc_or_die(sizeof(REAL) * kvd * 2, "evicted token");
        REAL* ev = ek + kvd;
        for (int g = 0; g < st->Hkv; g++) {
            memcpy(ek + g * Dh, FN(bank_k)(st, g, slot), sizeof(REAL) * Dh);
            memcpy(ev + g * Dh, FN(bank_v)(st, g, slot), sizeof(REAL) * Dh);
        }
        FN(Evicted) e = {ek, ev, st->g_ring[slot], st->src[slot]};
        FN(exact_update_one)(st, c, &e);
        FN(summary_update_one)(st, c, &e, eta_logit);
        free(ek);
        st->recent_idx = (slot + 1) % W;
    }
    for (int g = 0; g < st->Hkv; g++) {
        memcpy(FN(bank_k)(st, g, slot), k + g * Dh, sizeof(REAL) * Dh);
        memcpy(FN(bank_v)(st, g, slot), v + g * Dh, sizeof(REAL) * Dh);
    }
    st->allowed[slot] = 1;
    st->g_ring[slot] = gate;
    st->src[slot] = st->pos;
    st->pos++;
}

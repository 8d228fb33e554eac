// llmc/cpu/model.h — the whole model on the CPU: token embedding, per layer RMSNorm -> attention ->
// residual -> RMSNorm -> SwiGLU MLP -> residual, final RMSNorm, LM head (tied or not), mean
// cross-entropy; forward, backward for every parameter, AdamW with parameter groups and global-norm
// clipping. Type-generic (REAL, FN). Parameters and gradients live in one flat buffer each, laid out
// by the ParamTable (llmc/params.h).

typedef struct {
    ModelConfig cfg;
    ParamTable table;
    REAL* params;   // [table.total]
    REAL* grads;    // [table.total]
    REAL* adam_m;   // [table.total] (allocated on the first optimizer step)
    REAL* adam_v;
    int64_t adam_step;
    // activations for the last forward, B rows x T tokens
    int B, T, acts_B, acts_T, acts_tape;
    int* tokens;    // [B*T]
    int* targets;   // [B*T], < 0 = ignored
    int n_targets;  // counted targets of the last forward
    REAL *resid, *resid_mid;      // [(L+1)*BT*D], [L*BT*D] residual stream before each layer / after its attention
    REAL *hn1, *rstd1, *hn2, *rstd2;  // [L*BT*D], [L*BT] normed inputs of attention and MLP
    REAL *mlp_gate, *mlp_up, *mlp_act;  // [L*BT*F]
    REAL *hf, *rstdf, *logits, *losses; // [BT*D], [BT], [BT*V], [BT]
    FN(AttnActs)* attn;           // [L]
} FN(Model);

static REAL* FN(model_tensor)(const FN(Model)* m, REAL* buf, ParamKind k, int layer) {
    const ParamTensor* t = param_find(&m->table, k, layer);
    return t ? buf + t->offset : NULL;
}

static FN(AttnWeights) FN(model_attn_weights)(const FN(Model)* m, REAL* buf, int l) {
    FN(AttnWeights) w;
    w.wq = FN(model_tensor)(m, buf, PK_Q, l);
    w.wk = FN(model_tensor)(m, buf, PK_K, l);
    w.wv = FN(model_tensor)(m, buf, PK_V, l);
    w.wo = FN(model_tensor)(m, buf, PK_O, l);
    w.theta = FN(model_tensor)(m, buf, PK_THETA, l);
    w.lam_w = FN(model_tensor)(m, buf, PK_LAMBDA_W, l);
    w.lam_b = FN(model_tensor)(m, buf, PK_LAMBDA_B, l);
    w.head_norm = FN(model_tensor)(m, buf, PK_HEAD_NORM, l);
    w.write_w = FN(model_tensor)(m, buf, PK_WRITE_W, l);
    w.write_b = FN(model_tensor)(m, buf, PK_WRITE_B, l);
    w.eta = FN(model_tensor)(m, buf, PK_ETA, l);
    return w;
}

static void FN(model_init)(FN(Model)* m, const ModelConfig* c, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    m->cfg = *c;
    param_table_build(&m->table, c, sizeof(REAL) == sizeof(float) ? DT_F32 : DT_F64);
    m->params = (REAL*)coda_calloc_or_die(m->table.total, sizeof(REAL), "parameters");  // padding stays 0
    m->grads = (REAL*)coda_calloc_or_die(m->table.total, sizeof(REAL), "gradients");
    Rng rng;
    rng_seed(&rng, seed);
    for (int i = 0; i < m->table.n; i++) {
        const ParamTensor* t = &m->table.tensors[i];
        for (size_t j = 0; j < t->numel; j++) m->params[t->offset + j] = (REAL)param_init_value(c, t, &rng);
    }
}

// Copies every tensor of src whose name exists in dst with the same shape (e.g. a GQA base model into
// a CoDA model: q/k/v/o and the rest copied, theta/lambda/write/eta keep their init). Returns the count.
static int FN(model_copy_matching)(FN(Model)* dst, const FN(Model)* src) {
    int copied = 0;
    for (int i = 0; i < dst->table.n; i++) {
        const ParamTensor* d = &dst->table.tensors[i];
        const ParamTensor* s = param_find_by_name(&src->table, d->name);
        if (!s || s->numel != d->numel) continue;
        memcpy(dst->params + d->offset, src->params + s->offset, sizeof(REAL) * d->numel);
        copied++;
    }
    return copied;
}

static void FN(model_free_acts)(FN(Model)* m) {
    free(m->tokens); free(m->targets); free(m->resid); free(m->resid_mid); free(m->hn1); free(m->rstd1);
    free(m->hn2); free(m->rstd2); free(m->mlp_gate); free(m->mlp_up); free(m->mlp_act); free(m->hf);
    free(m->rstdf); free(m->logits); free(m->losses);
    for (int l = 0; m->attn && l < m->cfg.n_layers; l++) FN(attn_acts_free)(&m->attn[l]);
    free(m->attn);
    m->attn = NULL;
    m->acts_B = m->acts_T = 0;
}

static void FN(model_free)(FN(Model)* m) {
    FN(model_free_acts)(m);
    free(m->params); free(m->grads); free(m->adam_m); free(m->adam_v);
    param_table_free(&m->table);
}

static void FN(model_ensure_acts)(FN(Model)* m, int B, int T, int tape) {
    if (m->acts_B == B && m->acts_T == T && m->acts_tape == tape) return;
    FN(model_free_acts)(m);
    const ModelConfig* c = &m->cfg;
    size_t BT = (size_t)B * T, L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->ffn_dim;
    const char* what = "model activations";
    m->tokens = (int*)coda_calloc_or_die(BT, sizeof(int), what);
    m->targets = (int*)coda_calloc_or_die(BT, sizeof(int), what);
    m->resid = (REAL*)coda_calloc_or_die((L + 1) * BT * D, sizeof(REAL), what);
    m->resid_mid = (REAL*)coda_calloc_or_die(L * BT * D, sizeof(REAL), what);
    m->hn1 = (REAL*)coda_calloc_or_die(L * BT * D, sizeof(REAL), what);
    m->hn2 = (REAL*)coda_calloc_or_die(L * BT * D, sizeof(REAL), what);
    m->rstd1 = (REAL*)coda_calloc_or_die(L * BT, sizeof(REAL), what);
    m->rstd2 = (REAL*)coda_calloc_or_die(L * BT, sizeof(REAL), what);
    m->mlp_gate = (REAL*)coda_calloc_or_die(L * BT * F, sizeof(REAL), what);
    m->mlp_up = (REAL*)coda_calloc_or_die(L * BT * F, sizeof(REAL), what);
    m->mlp_act = (REAL*)coda_calloc_or_die(L * BT * F, sizeof(REAL), what);
    m->hf = (REAL*)coda_calloc_or_die(BT * D, sizeof(REAL), what);
    m->rstdf = (REAL*)coda_calloc_or_die(BT, sizeof(REAL), what);
    m->logits = (REAL*)coda_calloc_or_die(BT * (size_t)c->vocab_size, sizeof(REAL), what);
    m->losses = (REAL*)coda_calloc_or_die(BT, sizeof(REAL), what);
    m->attn = (FN(AttnActs)*)coda_calloc_or_die(L, sizeof(FN(AttnActs)), what);
    for (size_t l = 0; l < L; l++) FN(attn_acts_alloc)(&m->attn[l], c, B, T, tape);
    m->acts_B = B; m->acts_T = T; m->acts_tape = tape;
}

// Forward over B rows of T tokens. targets (may be NULL) -> returns the mean loss over targets >= 0.
// states: NULL for training (bounded layers start each row from a fresh zero state and record the
// backward's tape), or [L*B] persistent bounded states for inference (chunked prefill that continues
// each row's state; state of layer l, row b = states[l*B + b]).
static double FN(model_forward)(FN(Model)* m, const int* tokens, const int* targets, int B, int T, FN(BankState)* states) {
    const ModelConfig* c = &m->cfg;
    FN(model_ensure_acts)(m, B, T, states == NULL);
    m->B = B; m->T = T;
    int n = B * T, D = c->dim, F = c->ffn_dim, V = c->vocab_size;
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= V) coda_fatal("token id %d at index %d is outside the vocabulary [0, %d)", tokens[i], i, V);
        m->tokens[i] = tokens[i];
        m->targets[i] = targets ? targets[i] : -1;
    }
    const REAL* emb = FN(model_tensor)(m, m->params, PK_EMBED, 0);
    for (int i = 0; i < n; i++) memcpy(m->resid + (size_t)i * D, emb + (size_t)tokens[i] * D, sizeof(REAL) * D);
    for (int l = 0; l < c->n_layers; l++) {
        size_t o = (size_t)l * n;
        REAL *x = m->resid + o * D, *mid = m->resid_mid + o * D, *next = m->resid + (o + n) * D;
        FN(rmsnorm_forward)(m->hn1 + o * D, m->rstd1 + o, x, FN(model_tensor)(m, m->params, PK_ATTN_NORM, l), n, D, c->norm_eps);
        FN(AttnWeights) w = FN(model_attn_weights)(m, m->params, l);
        FN(attn_forward)(&w, c, &m->attn[l], m->hn1 + o * D, B, T, states ? states + (size_t)l * B : NULL, 1, mid);
        for (size_t i = 0; i < (size_t)n * D; i++) mid[i] += x[i];
        FN(rmsnorm_forward)(m->hn2 + o * D, m->rstd2 + o, mid, FN(model_tensor)(m, m->params, PK_MLP_NORM, l), n, D, c->norm_eps);
        FN(matmul_forward)(m->mlp_gate + o * F, m->hn2 + o * D, FN(model_tensor)(m, m->params, PK_GATE, l), NULL, n, D, F);
        FN(matmul_forward)(m->mlp_up + o * F, m->hn2 + o * D, FN(model_tensor)(m, m->params, PK_UP, l), NULL, n, D, F);
        FN(swiglu_forward)(m->mlp_act + o * F, m->mlp_gate + o * F, m->mlp_up + o * F, (size_t)n * F);
        FN(matmul_forward)(next, m->mlp_act + o * F, FN(model_tensor)(m, m->params, PK_DOWN, l), NULL, n, F, D);
        for (size_t i = 0; i < (size_t)n * D; i++) next[i] += mid[i];
    }
    FN(rmsnorm_forward)(m->hf, m->rstdf, m->resid + (size_t)c->n_layers * n * D, FN(model_tensor)(m, m->params, PK_FINAL_NORM, 0),
                        n, D, c->norm_eps);
    const REAL* head = c->tie_embeddings ? emb : FN(model_tensor)(m, m->params, PK_LM_HEAD, 0);
    FN(matmul_forward)(m->logits, m->hf, head, NULL, n, D, V);
    m->n_targets = 0;
    for (int i = 0; i < n; i++) m->n_targets += m->targets[i] >= 0;
    double total = FN(crossentropy_forward)(m->losses, m->logits, m->targets, n, V);
    return m->n_targets ? total / m->n_targets : 0.0;
}

static void FN(model_zero_grad)(FN(Model)* m) { memset(m->grads, 0, sizeof(REAL) * m->table.total); }

// Backward of the last training forward: accumulates into m->grads the gradient of
// loss_scale * (mean loss). (loss_scale = 1/grad_accum for gradient accumulation.)
static void FN(model_backward)(FN(Model)* m, REAL loss_scale) {
    const ModelConfig* c = &m->cfg;
    if (c->bounded && !m->acts_tape) coda_fatal("model_backward needs a training forward (states == NULL)");
    int B = m->B, T = m->T, n = B * T, D = c->dim, F = c->ffn_dim, V = c->vocab_size;
    size_t nD = (size_t)n * D, nF = (size_t)n * F;
    REAL* dlogits = (REAL*)coda_calloc_or_die((size_t)n * V, sizeof(REAL), "logit gradients");
    REAL* dres = (REAL*)coda_calloc_or_die(nD, sizeof(REAL), "residual gradients");
    REAL* dmid = (REAL*)coda_calloc_or_die(nD, sizeof(REAL), "residual gradients");
    REAL* dh = (REAL*)coda_calloc_or_die(nD, sizeof(REAL), "hidden gradients");
    REAL* dF = (REAL*)coda_calloc_or_die(3 * nF, sizeof(REAL), "MLP gradients");
    REAL *dact = dF, *dgate = dF + nF, *dup = dF + 2 * nF;
    if (m->n_targets) FN(crossentropy_backward)(dlogits, m->logits, m->targets, n, V, loss_scale / m->n_targets);
    REAL* emb = FN(model_tensor)(m, m->params, PK_EMBED, 0);
    REAL* demb = FN(model_tensor)(m, m->grads, PK_EMBED, 0);
    REAL* head = c->tie_embeddings ? emb : FN(model_tensor)(m, m->params, PK_LM_HEAD, 0);
    REAL* dhead = c->tie_embeddings ? demb : FN(model_tensor)(m, m->grads, PK_LM_HEAD, 0);
    FN(matmul_backward)(dh, dhead, NULL, dlogits, m->hf, head, n, D, V);
    FN(rmsnorm_backward)(dres, FN(model_tensor)(m, m->grads, PK_FINAL_NORM, 0), dh, m->resid + (size_t)c->n_layers * nD,
                         FN(model_tensor)(m, m->params, PK_FINAL_NORM, 0), m->rstdf, n, D);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        size_t o = (size_t)l * n;
        // MLP: next = mid + down(swiglu(gate(hn2), up(hn2)))
        memcpy(dmid, dres, sizeof(REAL) * nD);
        memset(dF, 0, sizeof(REAL) * 3 * nF);
        FN(matmul_backward)(dact, FN(model_tensor)(m, m->grads, PK_DOWN, l), NULL, dres, m->mlp_act + o * F,
                            FN(model_tensor)(m, m->params, PK_DOWN, l), n, F, D);
        FN(swiglu_backward)(dgate, dup, dact, m->mlp_gate + o * F, m->mlp_up + o * F, nF);
        memset(dh, 0, sizeof(REAL) * nD);
        FN(matmul_backward)(dh, FN(model_tensor)(m, m->grads, PK_GATE, l), NULL, dgate, m->hn2 + o * D,
                            FN(model_tensor)(m, m->params, PK_GATE, l), n, D, F);
        FN(matmul_backward)(dh, FN(model_tensor)(m, m->grads, PK_UP, l), NULL, dup, m->hn2 + o * D,
                            FN(model_tensor)(m, m->params, PK_UP, l), n, D, F);
        FN(rmsnorm_backward)(dmid, FN(model_tensor)(m, m->grads, PK_MLP_NORM, l), dh, m->resid_mid + o * D,
                             FN(model_tensor)(m, m->params, PK_MLP_NORM, l), m->rstd2 + o, n, D);
        // attention: mid = x + attn(hn1)
        memcpy(dres, dmid, sizeof(REAL) * nD);
        memset(dh, 0, sizeof(REAL) * nD);
        FN(AttnWeights) w = FN(model_attn_weights)(m, m->params, l), g = FN(model_attn_weights)(m, m->grads, l);
        FN(attn_backward)(&w, &g, c, &m->attn[l], m->hn1 + o * D, dmid, dh);
        FN(rmsnorm_backward)(dres, FN(model_tensor)(m, m->grads, PK_ATTN_NORM, l), dh, m->resid + o * D,
                             FN(model_tensor)(m, m->params, PK_ATTN_NORM, l), m->rstd1 + o, n, D);
    }
    for (int i = 0; i < n; i++)
        for (int d = 0; d < D; d++) demb[(size_t)m->tokens[i] * D + d] += dres[(size_t)i * D + d];
    free(dlogits); free(dres); free(dmid); free(dh); free(dF);
}

// L2 norm of the gradients of trainable tensors.
static double FN(model_grad_norm)(const FN(Model)* m) {
    double ss = 0;
    for (int i = 0; i < m->table.n; i++) {
        const ParamTensor* t = &m->table.tensors[i];
        if (!t->trainable) continue;
        for (size_t j = 0; j < t->numel; j++) ss += (double)m->grads[t->offset + j] * m->grads[t->offset + j];
    }
    return sqrt(ss);
}

// AdamW (PyTorch semantics: decoupled decay p *= 1 - lr*wd, bias-corrected moments) on trainable
// tensors, with per-group lr and weight decay, after clipping the global gradient norm to
// opt->grad_clip (if > 0). lr_scale multiplies every group's lr (the schedule). Returns the norm
// before clipping.
static double FN(model_adamw_step)(FN(Model)* m, const AdamWConfig* opt, double lr_scale) {
    if (!m->adam_m) {
        m->adam_m = (REAL*)coda_calloc_or_die(m->table.total, sizeof(REAL), "AdamW first moments");
        m->adam_v = (REAL*)coda_calloc_or_die(m->table.total, sizeof(REAL), "AdamW second moments");
    }
    double norm = FN(model_grad_norm)(m);
    double clip = (opt->grad_clip > 0 && norm > opt->grad_clip) ? opt->grad_clip / (norm + 1e-6) : 1.0;
    m->adam_step++;
    double bc1 = 1.0 - pow(opt->beta1, (double)m->adam_step), bc2 = 1.0 - pow(opt->beta2, (double)m->adam_step);
    for (int i = 0; i < m->table.n; i++) {
        const ParamTensor* t = &m->table.tensors[i];
        if (!t->trainable) continue;
        ParamGroup grp = PARAM_KINDS[t->kind].group;
        double lr = opt->lr[grp] * lr_scale, wd = opt->weight_decay[grp];
        for (size_t j = t->offset; j < t->offset + t->numel; j++) {
            double g = m->grads[j] * clip;
            double mm = opt->beta1 * m->adam_m[j] + (1.0 - opt->beta1) * g;
            double vv = opt->beta2 * m->adam_v[j] + (1.0 - opt->beta2) * g * g;
            m->adam_m[j] = (REAL)mm;
            m->adam_v[j] = (REAL)vv;
            double p = m->params[j] * (1.0 - lr * wd);
            p -= lr * (mm / bc1) / (sqrt(vv / bc2) + opt->eps);
            m->params[j] = (REAL)p;
        }
    }
    return norm;
}

// Decode one token per row through every layer (bounded layers use docs/spec.md §2.4's step; the model must
// be bounded). states [L*B]; logits [B, V].
static void FN(model_step)(FN(Model)* m, FN(BankState)* states, const int* tokens, int B, REAL* logits) {
    const ModelConfig* c = &m->cfg;
    if (!c->bounded) coda_fatal("model_step: single-token decode needs a bounded model");
    int D = c->dim, F = c->ffn_dim, V = c->vocab_size;
    REAL* buf = (REAL*)coda_calloc_or_die((size_t)4 * D + 3 * F + 1, sizeof(REAL), "decode scratch");
    REAL *x = buf, *h = x + D, *y = h + D, *hf = y + D, *fg = hf + D, *fu = fg + F, *fa = fu + F, *rstd = fa + F;
    const REAL* emb = FN(model_tensor)(m, m->params, PK_EMBED, 0);
    for (int b = 0; b < B; b++) {
        memcpy(x, emb + (size_t)tokens[b] * D, sizeof(REAL) * D);
        for (int l = 0; l < c->n_layers; l++) {
            FN(rmsnorm_forward)(h, rstd, x, FN(model_tensor)(m, m->params, PK_ATTN_NORM, l), 1, D, c->norm_eps);
            FN(AttnWeights) w = FN(model_attn_weights)(m, m->params, l);
            FN(attn_decode)(&w, c, &states[(size_t)l * B + b], h, y);
            for (int i = 0; i < D; i++) x[i] += y[i];
            FN(rmsnorm_forward)(h, rstd, x, FN(model_tensor)(m, m->params, PK_MLP_NORM, l), 1, D, c->norm_eps);
            FN(matmul_forward)(fg, h, FN(model_tensor)(m, m->params, PK_GATE, l), NULL, 1, D, F);
            FN(matmul_forward)(fu, h, FN(model_tensor)(m, m->params, PK_UP, l), NULL, 1, D, F);
            FN(swiglu_forward)(fa, fg, fu, (size_t)F);
            FN(matmul_forward)(y, fa, FN(model_tensor)(m, m->params, PK_DOWN, l), NULL, 1, F, D);
            for (int i = 0; i < D; i++) x[i] += y[i];
        }
        FN(rmsnorm_forward)(hf, rstd, x, FN(model_tensor)(m, m->params, PK_FINAL_NORM, 0), 1, D, c->norm_eps);
        const REAL* head = c->tie_embeddings ? emb : FN(model_tensor)(m, m->params, PK_LM_HEAD, 0);
        FN(matmul_forward)(logits + (size_t)b * V, hf, head, NULL, 1, D, V);
    }
    free(buf);
}

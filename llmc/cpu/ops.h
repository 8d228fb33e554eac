// llmc/cpu/ops.h — element-wise and matmul building blocks of the CPU reference, forward and
// backward. Type-generic: included by llmc/cpu/reference.h once per precision with REAL (float or
// double) and FN(name) (name suffix _f32 / _f64) defined. Backward functions ACCUMULATE (+=) into
// parameter and input gradients, so callers zero gradients once per optimizer step.
// No include guard on purpose.

// y[n, o] = sum_i x[n, i] * w[o, i] (+ b[o]); w is [O, I] like nn.Linear.weight.
static void FN(matmul_forward)(REAL* y, const REAL* x, const REAL* w, const REAL* b, int N, int I, int O) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const REAL* xn = x + (size_t)n * I;
        for (int o = 0; o < O; o++) {
            const REAL* wo = w + (size_t)o * I;
            REAL s = b ? b[o] : (REAL)0;
            for (int i = 0; i < I; i++) s += xn[i] * wo[i];
            y[(size_t)n * O + o] = s;
        }
    }
}

// dx += dy · w ; dw += dyᵀ · x ; db += Σ_n dy. Any of dx, dw, db may be NULL (e.g. frozen weights).
static void FN(matmul_backward)(REAL* dx, REAL* dw, REAL* db, const REAL* dy, const REAL* x, const REAL* w,
                                int N, int I, int O) {
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            REAL* dxn = dx + (size_t)n * I;
            const REAL* dyn = dy + (size_t)n * O;
            for (int o = 0; o < O; o++) {
                REAL d = dyn[o];
                const REAL* wo = w + (size_t)o * I;
                for (int i = 0; i < I; i++) dxn[i] += d * wo[i];
            }
        }
    }
    if (dw || db) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < O; o++) {
            REAL* dwo = dw ? dw + (size_t)o * I : NULL;
            REAL dbo = 0;
            for (int n = 0; n < N; n++) {
                REAL d = dy[(size_t)n * O + o];
                dbo += d;
                if (dwo) {
                    const REAL* xn = x + (size_t)n * I;
                    for (int i = 0; i < I; i++) dwo[i] += d * xn[i];
                }
            }
            if (db) db[o] += dbo;
        }
    }
}

// RMSNorm over the last dim C: y = x * rsqrt(mean(x^2) + eps) * w. Saves rstd[n] for the backward.
static void FN(rmsnorm_forward)(REAL* y, REAL* rstd, const REAL* x, const REAL* w, int N, int C, REAL eps) {
    for (int n = 0; n < N; n++) {
        const REAL* xn = x + (size_t)n * C;
        REAL ss = 0;
        for (int i = 0; i < C; i++) ss += xn[i] * xn[i];
        REAL r = (REAL)1 / sqrt(ss / C + eps);
        if (rstd) rstd[n] = r;
        for (int i = 0; i < C; i++) y[(size_t)n * C + i] = xn[i] * r * (w ? w[i] : (REAL)1);
    }
}

// With n = x * rstd: dw += dy * n ; dx += rstd * (dn - n * mean(dn * n)), dn = dy * w.
static void FN(rmsnorm_backward)(REAL* dx, REAL* dw, const REAL* dy, const REAL* x, const REAL* w, const REAL* rstd,
                                 int N, int C) {
    for (int n = 0; n < N; n++) {
        const REAL* xn = x + (size_t)n * C;
        const REAL* dyn = dy + (size_t)n * C;
        REAL r = rstd[n], dot = 0;
        for (int i = 0; i < C; i++) {
            REAL nv = xn[i] * r, dn = dyn[i] * (w ? w[i] : (REAL)1);
            dot += dn * nv;
            if (dw) dw[i] += dyn[i] * nv;
        }
        dot /= C;
        for (int i = 0; i < C; i++) {
            REAL nv = xn[i] * r, dn = dyn[i] * (w ? w[i] : (REAL)1);
            dx[(size_t)n * C + i] += r * (dn - nv * dot);
        }
    }
}

static inline REAL FN(sigmoid)(REAL x) { return (REAL)1 / ((REAL)1 + exp(-x)); }

// SwiGLU: act = silu(gate) * up.
static void FN(swiglu_forward)(REAL* act, const REAL* gate, const REAL* up, size_t n) {
    for (size_t i = 0; i < n; i++) act[i] = gate[i] * FN(sigmoid)(gate[i]) * up[i];
}
static void FN(swiglu_backward)(REAL* dgate, REAL* dup, const REAL* dact, const REAL* gate, const REAL* up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        REAL s = FN(sigmoid)(gate[i]), silu = gate[i] * s;
        dup[i] += dact[i] * silu;
        dgate[i] += dact[i] * up[i] * s * ((REAL)1 + gate[i] * ((REAL)1 - s));
    }
}

// RoPE tables for positions pos0..pos0+T-1: cos/sin[t, i], i < Dh/2, with inv_freq[i] = base^(-2i/Dh)
// computed in fp32 and angles from fp32 positions, as HF does (the fp64 build computes in double).
// bf16_positions emulates the reference's defect: positions, inv_freq, angles and the tables rounded
// to bf16 (docs/protocol.md §8.2).
static void FN(rope_tables)(REAL* cosv, REAL* sinv, int64_t pos0, int T, int Dh, double base, int bf16_positions) {
    int half = Dh / 2;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            REAL c, s;
            if (bf16_positions) {
                float p = round_bf16((float)(pos0 + t));
                float f = round_bf16((float)(1.0 / pow(base, (double)(2 * i) / Dh)));
                float ang = round_bf16(p * f);
                c = round_bf16(cosf(ang));
                s = round_bf16(sinf(ang));
            } else if (sizeof(REAL) == sizeof(float)) {
                float f = 1.0f / powf((float)base, (float)(2 * i) / (float)Dh);
                float ang = (float)(pos0 + t) * f;
                c = cosf(ang);
                s = sinf(ang);
            } else {
                double ang = (double)(pos0 + t) / pow(base, (double)(2 * i) / Dh);
                c = (REAL)cos(ang);
                s = (REAL)sin(ang);
            }
            cosv[(size_t)t * half + i] = c;
            sinv[(size_t)t * half + i] = s;
        }
    }
}

// Rotates every head vector of x[t, n_heads*Dh] in place by its position's angles (sign = +1), or by
// the inverse rotation (sign = -1), which is the backward of the forward rotation.
static void FN(rope_apply)(REAL* x, const REAL* cosv, const REAL* sinv, int T, int n_heads, int Dh, RopeLayout layout,
                           int sign) {
    int half = Dh / 2;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_heads; h++) {
            REAL* xh = x + ((size_t)t * n_heads + h) * Dh;
            for (int i = 0; i < half; i++) {
                int a, b;
                rope_pair(i, Dh, layout, &a, &b);
                REAL c = cosv[(size_t)t * half + i], s = sign * sinv[(size_t)t * half + i];
                REAL xa = xh[a], xb = xh[b];
                xh[a] = xa * c - xb * s;
                xh[b] = xb * c + xa * s;
            }
        }
}

// Cross-entropy per row: loss[n] = logsumexp(logits[n]) - logits[n, target[n]]; rows with target < 0
// are ignored (loss 0). Returns the sum of losses.
static double FN(crossentropy_forward)(REAL* losses, const REAL* logits, const int* targets, int N, int V) {
    double total = 0;
    for (int n = 0; n < N; n++) {
        const REAL* l = logits + (size_t)n * V;
        if (targets[n] < 0) { if (losses) losses[n] = 0; continue; }
        REAL mx = l[0];
        for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        REAL se = 0;
        for (int i = 0; i < V; i++) se += exp(l[i] - mx);
        REAL loss = mx + log(se) - l[targets[n]];
        if (losses) losses[n] = loss;
        total += loss;
    }
    return total;
}
// dlogits[n] += dloss * (softmax(logits[n]) - onehot(target)).
static void FN(crossentropy_backward)(REAL* dlogits, const REAL* logits, const int* targets, int N, int V, REAL dloss) {
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        const REAL* l = logits + (size_t)n * V;
        REAL mx = l[0];
        for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        REAL se = 0;
        for (int i = 0; i < V; i++) se += exp(l[i] - mx);
        for (int i = 0; i < V; i++) dlogits[(size_t)n * V + i] += dloss * (exp(l[i] - mx) / se - (i == targets[n]));
    }
}

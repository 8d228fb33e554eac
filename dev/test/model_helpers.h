// model_helpers.h — inputs for tests of the CPU reference model and of the GPU model against it
// (test_cpu_model.h, test_gpu_model.cuh, test_infer.h): parameters moved off their init values and
// random token ids, both from a seed.
#pragma once
#include "../../llmc/cpu/reference.h"

// Moves every parameter off its init value (norm weights off 1, theta off 0, write gate weights
// non-zero, ...) so that every gradient path is exercised with generic values.
#define DEFINE_PERTURB(SFX, T)                                                          \
    static void perturb_params##SFX(Model##SFX* m, uint64_t seed, double scale) {      \
        Rng r;                                                                          \
        rng_seed(&r, seed);                                                             \
        for (int i = 0; i < m->table.n; i++) {                                          \
            const ParamTensor* t = &m->table.tensors[i];                                \
            double s = t->ndim == 1 || t->kind == PK_THETA || t->kind == PK_WRITE_W ? scale : scale * 0.1; \
            for (size_t j = 0; j < t->numel; j++) m->params[t->offset + j] += (T)(s * rng_normal(&r)); \
        }                                                                               \
    }
DEFINE_PERTURB(_f32, float)
DEFINE_PERTURB(_f64, double)

static void random_tokens(int* tok, int n, int V, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) tok[i] = (int)rng_below(&r, (uint64_t)V);
}

// rand.h — a small seeded RNG (splitmix64 state, xoshiro-free) with uniform and normal draws.
// Deterministic across platforms: integer state, Box-Muller in double. Not torch-compatible by design:
// coda.c's own initialisation only has to be reproducible from its seed.
#pragma once
#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t state;
    int has_spare;  // Box-Muller yields two normals; keep the second
    double spare;
} Rng;

static inline void rng_seed(Rng* r, uint64_t seed) {
    r->state = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    r->has_spare = 0;
    r->spare = 0.0;
}
static inline uint64_t rng_u64(Rng* r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// Uniform in [0, 1) with 53 random bits.
static inline double rng_uniform(Rng* r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
static inline double rng_normal(Rng* r) {
    if (r->has_spare) { r->has_spare = 0; return r->spare; }
    double u1, u2;
    do { u1 = rng_uniform(r); } while (u1 <= 0.0);
    u2 = rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1)), ang = 6.283185307179586 * u2;
    r->spare = rad * sin(ang);
    r->has_spare = 1;
    return rad * cos(ang);
}
// Uniform integer in [0, n) without modulo bias.
static inline uint64_t rng_below(Rng* r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do { x = rng_u64(r); } while (x >= limit);
    return x % n;
}

// llmc/cpu/reference.h — the plain-C CPU reference of the whole model, the oracle every GPU kernel is
// checked against. It is written once, type-generically, and instantiated twice:
//   *_f32 (float)  — the reference proper: matches the GPU FP32 build and trains tiny models;
//   *_f64 (double) — for finite-difference gradient checks.
// The generic files use REAL for the element type and FN(name) for names; they have no include guard.
#pragma once
#include <math.h>
#include <stdint.h>
#include "../common.h"
#include "../config.h"
#include "../params.h"
#include "../optim.h"
#include "../rand.h"

// Index of the two members of RoPE pair i in a head vector (docs/spec.md §1.3).
static inline void rope_pair(int i, int Dh, RopeLayout layout, int* a, int* b) {
    if (layout == ROPE_INTERLEAVED) { *a = 2 * i; *b = 2 * i + 1; }
    else { *a = i; *b = i + Dh / 2; }
}

#define REAL float
#define FN(name) name##_f32
#include "ops.h"
#include "banks.h"
#include "attention.h"
#include "model.h"
#undef REAL
#undef FN

#define REAL double
#define FN(name) name##_f64
#include "ops.h"
#include "banks.h"
#include "attention.h"
#include "model.h"
#undef REAL
#undef FN

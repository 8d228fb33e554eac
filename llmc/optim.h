// optim.h — optimizer hyper-parameters shared by the CPU reference and the GPU trainer: AdamW with one
// lr and weight decay per parameter group (docs/protocol.md §1.4), and the learning-rate schedule.
#pragma once
#include <math.h>
#include "params.h"

typedef struct {
    double lr[GROUP_COUNT];
    double weight_decay[GROUP_COUNT];
    double beta1, beta2, eps;
    double grad_clip;  // <= 0: no clipping
} AdamWConfig;

// Multiplier of the peak lr for optimizer update u (0-based) of `total`: linear warmup over `warmup`
// updates (update 0 already gets 1/warmup of the peak, not 0 as the reference's scheduler does), then
// cosine decay to min_frac at the last update. Counted in optimizer updates, not micro-batches (the
// reference mixes the two, docs/protocol.md §1.5).
static inline double lr_schedule(int u, int total, int warmup, double min_frac) {
    if (warmup > 0 && u < warmup) return (double)(u + 1) / warmup;
    int decay = total - warmup;
    if (decay <= 1) return 1.0;
    double p = (double)(u - warmup) / (decay - 1);
    if (p > 1) p = 1;
    return min_frac + (1.0 - min_frac) * 0.5 * (1.0 + cos(M_PI * p));
}

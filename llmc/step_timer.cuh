// step_timer.cuh — optional GPU time per kind of kernel over one training update: how much of the
// step goes to matmuls, attention, norms, the optimizer... (the question "what share of the step time
// is the attention kernel?"). Each timed op is bracketed by a pair of CUDA events recorded on the
// model's stream; nothing synchronises until the update has been queued, then one wait and the sum
// of cudaEventElapsedTime per category. The events are a pool, grown on demand and reused by the next
// update, so a timed update creates no events after the first.
//
// Off by default: the model holds a StepTimer* that is NULL, and every hook is then one branch.
// Timing never changes what the kernels compute (an event is a marker in the stream), but it does
// add a little host work per op, so time an update after warm-up and compare its wall time with an
// untimed one. The sum of the categories is the time the GPU spent inside timed ops, launch gaps
// included where the GPU was waiting on the host; the update's wall time (events around the whole
// update) minus that sum is what no op accounts for: host work, synchronisations, gaps between ops.
#pragma once
#include "cuda_common.cuh"

// The categories, in print order. A new one goes in both the enum and the table.
typedef enum {
    ST_MATMUL_FWD, ST_MATMUL_DGRAD, ST_MATMUL_WGRAD, ST_ATTENTION_FWD, ST_ATTENTION_BWD, ST_NORM, ST_ROPE,
    ST_SWIGLU, ST_EMBEDDING, ST_CLASSIFIER, ST_OPTIMIZER, ST_BANK, ST_COMM, ST_OTHER, ST_COUNT
} StepCategory;

typedef struct {
    const char* name;
    const char* what;  // which calls it holds (printed with the table)
} StepCategoryInfo;

static const StepCategoryInfo STEP_CATEGORIES[ST_COUNT] = {
    {"matmul_fwd", "q/k/v/o/lambda, gate/up/down, LM head (also the recompute forward)"},
    {"matmul_dgrad", "input gradients of the same matmuls"},
    {"matmul_wgrad", "weight (and bias) gradients of the trainable matmuls"},
    {"attention_fwd", "coda_attention_forward (also the recompute forward)"},
    {"attention_bwd", "coda_attention_backward"},
    {"norm", "rmsnorm forward and backward"},
    {"rope", "RoPE of q, k and its inverse on dq, dk"},
    {"swiglu", "swiglu forward and backward"},
    {"embedding", "encoder forward and backward"},
    {"classifier", "fused softmax cross-entropy and the loss sum"},
    {"optimizer", "gradient norm and AdamW (clipping is folded into AdamW)"},
    {"bank", "bounded layers: write gate, bank scan and its reverse pass"},
    {"comm", "multi-GPU: reduce-scatter, all-gathers, all-reduces, the gathered-parameter copies"},
    {"other", "residual adds, token uploads, gradient zeroing and copies"},
};

typedef struct {
    cudaStream_t stream;
    cudaEvent_t* events;          // [2 * capacity]: start and stop of op i are events[2i], events[2i+1]
    unsigned char* category;      // [capacity]
    int capacity, n_ops;          // pool size (pairs), ops recorded in this update
    int open;                     // category of the op whose stop is pending, -1 if none
    cudaEvent_t update_start, update_stop;
    // results of step_timer_collect
    double ms[ST_COUNT];
    int ops[ST_COUNT];
    double sum_ms, wall_ms;
} StepTimer;

static void step_timer_init(StepTimer* t, cudaStream_t stream) {
    memset(t, 0, sizeof(*t));
    t->stream = stream;
    t->open = -1;
    cudaCheck(cudaEventCreate(&t->update_start));
    cudaCheck(cudaEventCreate(&t->update_stop));
}

static void step_timer_free(StepTimer* t) {
    for (int i = 0; i < 2 * t->capacity; i++) cudaCheck(cudaEventDestroy(t->events[i]));
    cudaCheck(cudaEventDestroy(t->update_start));
    cudaCheck(cudaEventDestroy(t->update_stop));
    free(t->events);
    free(t->category);
    memset(t, 0, sizeof(*t));
}

// Starts an update: forgets the previous one's ops and marks the update's start on the stream.
static void step_timer_begin_update(StepTimer* t) {
    t->n_ops = 0;
    t->open = -1;
    cudaCheck(cudaEventRecord(t->update_start, t->stream));
}

// Doubles the pool. Events already recorded stay valid: only the arrays holding their handles move.
static void step_timer_grow(StepTimer* t) {
    int cap = t->capacity ? 2 * t->capacity : 1024;
    t->events = (cudaEvent_t*)realloc(t->events, sizeof(cudaEvent_t) * 2 * cap);
    t->category = (unsigned char*)realloc(t->category, (size_t)cap);
    if (!t->events || !t->category) coda_fatal("step timer: out of host memory for %d event pairs", cap);
    for (int i = 2 * t->capacity; i < 2 * cap; i++) cudaCheck(cudaEventCreate(&t->events[i]));
    t->capacity = cap;
}

// Brackets one op. Ops do not nest: a nested pair would count the inner op twice.
static inline void step_timer_start(StepTimer* t, StepCategory c) {
    if (!t) return;
    if (t->open >= 0) coda_fatal("step timer: %s started inside %s", STEP_CATEGORIES[c].name, STEP_CATEGORIES[t->open].name);
    if (t->n_ops == t->capacity) step_timer_grow(t);
    t->category[t->n_ops] = (unsigned char)c;
    t->open = (int)c;
    cudaCheck(cudaEventRecord(t->events[2 * t->n_ops], t->stream));
}
static inline void step_timer_stop(StepTimer* t) {
    if (!t) return;
    cudaCheck(cudaEventRecord(t->events[2 * t->n_ops + 1], t->stream));
    t->n_ops++;
    t->open = -1;
}

// STEP_TIMED(timer, category, call...): the call, bracketed when the timer is on.
#define STEP_TIMED(timer, cat, ...)       \
    do {                                  \
        step_timer_start((timer), (cat)); \
        __VA_ARGS__;                      \
        step_timer_stop(timer);           \
    } while (0)

// Marks the update's end on the stream (no wait, so the caller's own timing of the update is not
// lengthened by the bookkeeping; step_timer_collect waits).
static void step_timer_end_update(StepTimer* t) {
    if (t->open >= 0) coda_fatal("step timer: update ended inside %s", STEP_CATEGORIES[t->open].name);
    cudaCheck(cudaEventRecord(t->update_stop, t->stream));
}

// Waits once for the update to finish and sums each category's op times.
static void step_timer_collect(StepTimer* t) {
    cudaCheck(cudaEventSynchronize(t->update_stop));
    memset(t->ms, 0, sizeof(t->ms));
    memset(t->ops, 0, sizeof(t->ops));
    t->sum_ms = 0;
    for (int i = 0; i < t->n_ops; i++) {
        float ms = 0;
        cudaCheck(cudaEventElapsedTime(&ms, t->events[2 * i], t->events[2 * i + 1]));
        t->ms[t->category[i]] += ms;
        t->ops[t->category[i]]++;
        t->sum_ms += ms;
    }
    float wall = 0;
    cudaCheck(cudaEventElapsedTime(&wall, t->update_start, t->update_stop));
    t->wall_ms = wall;
}

// The table: per category ms, share of the summed op time and of the update's wall time, op count.
// Every line starts with `prefix` ("" for the console, "# " for log.txt, whose readers skip '#').
static void step_timer_print(const StepTimer* t, FILE* f, const char* prefix) {
    double sum = t->sum_ms > 0 ? t->sum_ms : 1, wall = t->wall_ms > 0 ? t->wall_ms : 1;
    fprintf(f, "%s%-14s %10s %7s %7s %6s  %s\n", prefix, "category", "ms", "% sum", "% wall", "ops", "holds");
    for (int c = 0; c < ST_COUNT; c++)
        fprintf(f, "%s%-14s %10.3f %6.1f%% %6.1f%% %6d  %s\n", prefix, STEP_CATEGORIES[c].name, t->ms[c], 100 * t->ms[c] / sum,
                100 * t->ms[c] / wall, t->ops[c], STEP_CATEGORIES[c].what);
    fprintf(f, "%s%-14s %10.3f %6.1f%% %6.1f%% %6d\n", prefix, "sum of ops", t->sum_ms, 100.0, 100 * t->sum_ms / wall, t->n_ops);
    fprintf(f, "%s%-14s %10.3f %7s %6.1f%%         host work, syncs and gaps between ops\n", prefix, "untracked",
            t->wall_ms - t->sum_ms, "", 100 * (t->wall_ms - t->sum_ms) / wall);
    fprintf(f, "%s%-14s %10.3f %7s %6.1f%%         events around the whole update\n", prefix, "update wall", t->wall_ms, "", 100.0);
}

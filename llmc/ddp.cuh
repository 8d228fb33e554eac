// ddp.cuh — data-parallel training of a GpuModel over NCCL with ZeRO-1 (llm.c's design): one process
// per GPU; every rank holds the whole floatX model, runs the forward and backward of its own
// micro-batches (dataloader.h gives rank r its B rows of each global batch) and updates only its
// slice [lo, hi) of the optimizer state (llmc/zero.h's slice plan of the compact fp32 layout).
//
// One update, ddp_update (in place of gpu_model_update; every rank calls it):
//   1. reduce-scatter (sum) of the padded fp32 gradient m->grad [padded] into d->grad [shard]: this
//      rank's slice of the sum over ranks
//   2. the squared norm of the slice's hi - lo elements, all-reduced. Each rank's gradient is the mean
//      over its own micro-batches, and the update's is the mean over ranks, so the norm is
//      sqrt(sum of squares) / world and AdamW's grad_scale carries the 1/world
//   3. clipping as gpu_model_update, then AdamW over the slice's segment table (ADAMW_PARAM_COMPACT):
//      the slice's masters and moments, and its new floatX values into this rank's part of the staging
//      buffer, at their compact positions
//   4. all-gather (in place) of the staging buffer: the whole compact layout in floatX on every rank
//   5. one copy per trainable tensor: staging[train_offset, +numel) -> m->params[offset, +numel)
// Frozen tensors are never communicated: they are not in the compact layout.
//
// One rank (a world of 1 started with --nccl-init) gives bitwise gpu_model_update's step: the
// reduce-scatter of one rank is a copy; the norm is global_norm_squared over the same n_train elements
// (its blocks depend only on n); the all-reduce of one rank is the identity; the 1/world is applied
// only when world > 1, so the clip scale is gpu_model_clip_scale's own float; the slice table holds
// the whole table's segments (same ranges, groups and vector/scalar paths, 16-byte aligned buffers),
// so adamw_table_kernel computes the same values; the floatX copies take a detour through the staging
// buffer (copies are exact). dev/test/test_gpu_nccl.cuh checks all of it.
//
// Memory of one rank, in elements (n_train: the compact layout, gaps included; shard = ceil(n_train /
// world) rounded up to 64; padded = world * shard):
//   m->params              floatX [table.total]  the whole model, as on one GPU
//   m->grad                fp32   [padded]       the whole compact gradient (the backward writes it);
//                                                the padding and the alignment gaps stay zero
//   m->master, adam_m/v    freed (gpu_model_shard_optimizer)
//   d->grad                fp32   [shard]        this rank's slice of the summed gradient
//   d->master, adam_m/v    fp32   [shard] each   this rank's slice (elements [0, hi - lo) used)
//   d->staging             floatX [padded]       compact floatX; rank r's part is [r*shard, (r+1)*shard)
// Mistral-7B phase 1 (n_train 1.35 G) on 8 GPUs: grad 5.4 GB + staging 2.7 GB + slices 4 x 0.68 GB,
// instead of grad + master + m + v = 21.6 GB on one GPU.
//
// Checkpoints (ddp_checkpoint_save / _resume) keep the one-GPU format, train_state.bin holding the
// whole compact layout (train_state.h), so a run resumes with any number of ranks; every rank writes
// and reads its own slice of it (zero.h). They need a file system that every rank sees: one node's
// disk, or for several nodes a shared file system (NFS, Lustre, ...) for --out.
//
// Collectives run on the model's stream, so they are ordered with the kernels around them; every
// function here that communicates ends in nccl_wait (polling, with NCCL's asynchronous errors and
// CODA_NCCL_TIMEOUT, 600 s by default), so a rank whose peer died stops with a message instead of
// hanging, and no collective is left pending for a cudaStreamSynchronize to hang on. Every rank must
// call them in the same order. Rank 0 alone writes a checkpoint's weights and the others wait in a
// barrier meanwhile: on a slow file system, raise CODA_NCCL_TIMEOUT above the time of that write.
//
// Not here yet: overlapping the reduce-scatter with the backward (llm.c's per-layer buckets). Its
// hook is gpu_model_backward (model.cuh): once layer l's last weight gradient of the last
// micro-batch is written (after its attn-norm rmsnorm_backward), an event on the compute stream lets
// a communication stream reduce-scatter that layer's part of m->grad; that needs each layer's
// trainable tensors contiguous in the compact layout (they are: table order is layer order) and a
// reduce-scatter per bucket whose pieces map onto the ranks' slices, i.e. slices cut per layer
// rather than over the whole buffer (zero.h), which changes the slice plan and so the bits of the
// norm (summed per bucket). Nor is the all-gather overlapped with the next forward.
#pragma once
#include "checkpoint.cuh"
#include "model.cuh"
#include "nccl.cuh"
#include "zero.h"

#define DDP_MAX_SUMS 8  // values one ddp_sum all-reduces at most

typedef struct {
    NcclCtx nccl;                     // owned (ddp_free destroys the communicator)
    ZeroSlice slice;                  // this rank's [lo, hi) of the compact layout
    AdamWTable adamw;                 // the slice's segments (ranges from lo; floatX copies into the staging part)
    float *master, *adam_m, *adam_v;  // [shard]: the slice's fp32 state
    float* grad;                      // [shard]: the slice of the gradient summed over ranks
    floatX* staging;                  // [padded]: the updated floatX values in the compact layout
    float* d_norm;                    // device: the squared norm
    double* d_sums;                   // device [DDP_MAX_SUMS]: ddp_sum's buffer
    double* h_pinned;                 // pinned host [DDP_MAX_SUMS + 1]: read back without blocking, so that nccl_wait polls
    cudaStream_t stream;              // the model's
} Ddp;

// Takes over the communicator *nc (of the world m is trained in; *nc is zeroed), plans this rank's
// slice and allocates it, and hands m over to ZeRO (gpu_model_shard_optimizer: the padded gradient,
// no full-size optimizer state). Before the masters are set: initialise or load m, then
// ddp_sync_masters (or ddp_checkpoint_resume).
static void ddp_create(Ddp* d, GpuModel* m, NcclCtx* nc) {
    memset(d, 0, sizeof(*d));
    d->nccl = *nc;
    memset(nc, 0, sizeof(*nc));
    d->stream = m->ctx.stream;
    CodaError err;
    if (zero_slice(m->n_train, d->nccl.rank, d->nccl.world, &d->slice, &err) != 0) coda_fatal("%s", err.msg);
    const ZeroSlice* s = &d->slice;
    AdamWSegment* seg = (AdamWSegment*)coda_malloc_or_die(sizeof(AdamWSegment) * (size_t)(m->table.n ? m->table.n : 1), "AdamW segments");
    const int n_seg = adamw_segments_from_slice_to(&m->table, m->train_offset, s, ADAMW_PARAM_COMPACT, seg, m->table.n);
    adamw_table_create(&d->adamw, seg, n_seg, s->hi - s->lo);
    free(seg);
    const size_t shard = s->shard ? s->shard : 1, padded = s->padded ? s->padded : 1;
    float** slices[4] = {&d->master, &d->adam_m, &d->adam_v, &d->grad};
    const char* what[4] = {"ZeRO fp32 master slice", "ZeRO AdamW m slice", "ZeRO AdamW v slice", "ZeRO gradient slice"};
    for (int i = 0; i < 4; i++) {
        *slices[i] = (float*)cuda_malloc_or_die(sizeof(float) * shard, what[i]);
        cudaCheck(cudaMemset(*slices[i], 0, sizeof(float) * shard));  // gaps and the tail past hi - lo: zero, as on one GPU
    }
    d->staging = (floatX*)cuda_malloc_or_die(sizeof(floatX) * padded, "ZeRO floatX staging");
    cudaCheck(cudaMemset(d->staging, 0, sizeof(floatX) * padded));
    d->d_norm = (float*)cuda_malloc_or_die(sizeof(float), "ZeRO norm");
    d->d_sums = (double*)cuda_malloc_or_die(sizeof(double) * DDP_MAX_SUMS, "ZeRO sums");
    cudaCheck(cudaMallocHost((void**)&d->h_pinned, sizeof(double) * (DDP_MAX_SUMS + 1)));
    gpu_model_shard_optimizer(m, s->padded);
}

static void ddp_free(Ddp* d) {
    void* ptrs[] = {d->master, d->adam_m, d->adam_v, d->grad, d->staging, d->d_norm, d->d_sums};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) cudaCheck(cudaFree(ptrs[i]));
    if (d->h_pinned) cudaCheck(cudaFreeHost(d->h_pinned));
    adamw_table_free(&d->adamw);
    nccl_free(&d->nccl);
    memset(d, 0, sizeof(*d));
}

// The slice's masters = its [lo, hi) of the widened floatX parameters. Every rank initialised or
// loaded the whole model identically (same seed, same files), so no communication is needed.
static void ddp_sync_masters(GpuModel* m, Ddp* d) {
    const ZeroSlice* s = &d->slice;
    ZeroPiece* p = (ZeroPiece*)coda_malloc_or_die(sizeof(ZeroPiece) * (size_t)(m->table.n ? m->table.n : 1), "ZeRO pieces");
    const int np = zero_pieces(&m->table, m->train_offset, s, p, m->table.n);
    for (int k = 0; k < np; k++) {
        const ParamTensor* t = &m->table.tensors[p[k].tensor];
        floatX_to_float(&m->ctx, d->master + (p[k].lo - s->lo), m->params + t->offset + (p[k].lo - (size_t)m->train_offset[p[k].tensor]),
                        p[k].hi - p[k].lo);
    }
    free(p);
    cudaCheck(cudaStreamSynchronize(d->stream));
}

// Sums v[0, n) over the ranks, in place (fp64: losses and token counts are logged exactly).
static void ddp_sum(Ddp* d, double* v, int n) {
    if (n < 1 || n > DDP_MAX_SUMS) coda_fatal("ddp_sum: %d values (at most %d)", n, DDP_MAX_SUMS);
    memcpy(d->h_pinned, v, sizeof(double) * (size_t)n);
    cudaCheck(cudaMemcpyAsync(d->d_sums, d->h_pinned, sizeof(double) * (size_t)n, cudaMemcpyHostToDevice, d->stream));
    nccl_all_reduce_f64(&d->nccl, d->d_sums, d->d_sums, (size_t)n, d->stream);
    cudaCheck(cudaMemcpyAsync(d->h_pinned, d->d_sums, sizeof(double) * (size_t)n, cudaMemcpyDeviceToHost, d->stream));
    nccl_wait(&d->nccl, d->stream, "an all-reduce of host values");
    memcpy(v, d->h_pinned, sizeof(double) * (size_t)n);
}
// The mean over ranks of x (the logged training loss).
static double ddp_mean(Ddp* d, double x) {
    ddp_sum(d, &x, 1);
    return x / d->nccl.world;
}
// A barrier that also tells every rank how many ranks arrive with failed set (0: all went well).
static int ddp_barrier(Ddp* d, int failed) {
    double f = failed ? 1.0 : 0.0;
    ddp_sum(d, &f, 1);
    return (int)f;
}
// After a step every rank did (rc its result): nonzero on every rank if any rank failed; a rank that
// did not fail itself gets a message saying so (the failed ranks' own messages name the cause).
static int ddp__agree(Ddp* d, int rc, const char* what, CodaError* err) {
    const int n_failed = ddp_barrier(d, rc != 0);
    if (n_failed && rc == 0)
        coda_errorf(err, "rank %d: %d rank%s failed while %s (see %s message)", d->nccl.rank, n_failed, n_failed > 1 ? "s" : "", what,
                    n_failed > 1 ? "their" : "its");
    return n_failed != 0;
}

// The data-parallel step (see the top of this file). Returns the norm of the mean gradient before
// clipping, the same on every rank.
static float ddp_update(GpuModel* m, Ddp* d, const AdamWConfig* opt, double lr_scale) {
    const ZeroSlice* s = &d->slice;
    const int world = d->nccl.world;
    cudaStream_t st = d->stream;
    STEP_TIMED(m->timer, ST_COMM, nccl_reduce_scatter_f32(&d->nccl, m->grad, d->grad, s->shard, st));
    STEP_TIMED(m->timer, ST_OPTIMIZER, global_norm_squared(&m->ctx, d->d_norm, d->grad, s->hi - s->lo, 0));
    STEP_TIMED(m->timer, ST_COMM, nccl_all_reduce_f32(&d->nccl, d->d_norm, d->d_norm, 1, st));
    float* h_norm = (float*)(d->h_pinned + DDP_MAX_SUMS);
    cudaCheck(cudaMemcpyAsync(h_norm, d->d_norm, sizeof(float), cudaMemcpyDeviceToHost, st));
    nccl_wait(&d->nccl, st, "the gradient norm's all-reduce");  // the host needs the norm to clip
    float norm = sqrtf(*h_norm);
    float scale;
    if (world > 1) {  // the mean over ranks: 1/world into the norm and into AdamW's gradient scale
        norm /= (float)world;
        scale = (float)((double)gpu_model_clip_scale(opt, norm) / world);
    } else {          // one rank: exactly gpu_model_update's floats
        scale = gpu_model_clip_scale(opt, norm);
    }
    floatX* mine = d->staging + (size_t)s->rank * s->shard;
    gpu_model_adamw(m, &d->adamw, d->master, mine, d->grad, d->adam_m, d->adam_v, opt, lr_scale, scale);
    STEP_TIMED(m->timer, ST_COMM, nccl_all_gather_x(&d->nccl, mine, d->staging, s->shard, st));
    STEP_TIMED(m->timer, ST_COMM, {
        for (int i = 0; i < m->table.n; i++) {
            if (m->train_offset[i] < 0) continue;
            const ParamTensor* t = &m->table.tensors[i];
            cudaCheck(cudaMemcpyAsync(m->params + t->offset, d->staging + m->train_offset[i], sizeof(floatX) * t->numel,
                                      cudaMemcpyDeviceToDevice, st));
        }
    });
    nccl_wait(&d->nccl, st, "the parameters' all-gather");
    return norm;
}

// ---------------------------------------------------------------- checkpoints
// zero.h's source of a rank's slice values: the device buffers.
static int ddp__state_source(void* ctx, int a, size_t at, size_t n, float* dst, CodaError* err) {
    (void)err;
    const Ddp* d = (const Ddp*)ctx;
    const float* src = a == 0 ? d->master : a == 1 ? d->adam_m : d->adam_v;
    cudaCheck(cudaMemcpy(dst, src + at, sizeof(float) * n, cudaMemcpyDeviceToHost));
    return 0;
}

// checkpoint_save for a ZeRO run (collective: every rank calls it, and it fails on every rank if it
// fails on one). The same files: rank 0 writes config.json and the weights into OUT/step_N.tmp and
// creates train_state.bin at its full size; barrier; every rank writes its slices; barrier; rank 0
// seals the state (the checksum), renames step_N.tmp to step_N and replaces LATEST. A rank that dies
// on the way leaves step_N.tmp, which the next start removes; LATEST still names the previous one.
static int ddp_checkpoint_save(GpuModel* m, Ddp* d, const char* out_dir, int step, const TrainRun* run, DataPosition pos, CodaError* err) {
    const int lead = d->nccl.rank == 0;
    CkptPaths p;
    checkpoint_paths(out_dir, step, &p);
    int rc = 0;
    if (lead) {
        rc = checkpoint_write_model(m, &p, err);
        if (rc == 0) {
            const TrainStateHeader h = checkpoint_header(m, step, run, pos);
            rc = zero_train_state_create(p.state, &h, err);
        }
    }
    if (ddp__agree(d, rc, "writing the weights", err)) return -1;
    rc = zero_train_state_write_slice(p.state, &d->slice, ddp__state_source, d, 0, err);
    if (ddp__agree(d, rc, "writing the slices of train_state.bin", err)) return -1;
    if (lead) {
        rc = zero_train_state_finish(p.state, err);
        if (rc == 0) rc = checkpoint_commit(out_dir, &p, err);
    }
    return ddp__agree(d, rc, "sealing the checkpoint", err) ? -1 : 0;
}

// checkpoint_resume for a ZeRO run (collective, as ddp_checkpoint_save), from a checkpoint written by
// any number of ranks: every rank checks the state's header against the model and run, loads the
// weights and reads its own slices (through a bounded host buffer); rank 0 also verifies the whole
// file's checksum (a read of the arrays: the checksum is one stream).
static int ddp_checkpoint_resume(GpuModel* m, Ddp* d, const char* dir, const TrainRun* run, HfLoadReport* rep, int* step, DataPosition* pos,
                                 CodaError* err) {
    char path[4300];
    snprintf(path, sizeof(path), "%s/train_state.bin", dir);
    const TrainStateExpect expect = checkpoint_expect(m, run);
    TrainStateHeader h;
    memset(&h, 0, sizeof(h));
    FILE* f = NULL;
    int rc = train_state_open(path, &expect, &h, &f, err);  // before any weight is touched
    if (rc == 0) rc = checkpoint_load_weights(m, dir, rep, err);
    if (rc == 0) {
        const ZeroSlice* s = &d->slice;
        const size_t n = s->hi - s->lo, chunk = (size_t)16 << 20, k0 = n < chunk ? (n ? n : 1) : chunk;
        float* buf = (float*)coda_malloc_or_die(3 * sizeof(float) * k0, "train state staging");
        for (size_t i = 0; i < n && rc == 0; i += chunk) {
            ZeroSlice c = *s;  // a piece of the slice is a slice too
            c.lo = s->lo + i;
            c.hi = c.lo + (n - i < chunk ? n - i : chunk);
            const size_t k = c.hi - c.lo;
            rc = zero_read_train_state_slice(f, path, h.n_train, &c, buf, buf + k0, buf + 2 * k0, err);
            float* dst[3] = {d->master, d->adam_m, d->adam_v};
            for (int a = 0; a < 3 && rc == 0; a++) cudaCheck(cudaMemcpy(dst[a] + i, buf + a * k0, sizeof(float) * k, cudaMemcpyHostToDevice));
        }
        free(buf);
    }
    if (f) fclose(f);
    if (rc == 0 && d->nccl.rank == 0 && h.version >= 2) {
        TrainStateHeader again;
        uint64_t sum = 0;
        rc = zero_train_state_checksum(path, &again, &sum, err);
        if (rc == 0 && sum != (uint64_t)h.checksum) rc = coda_errorf(err, "%s is damaged: checksum mismatch", path);
    }
    if (ddp__agree(d, rc, "resuming", err)) return -1;
    checkpoint_resume_counters(m, &h, step, pos);
    return 0;
}

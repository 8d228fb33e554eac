// nccl.cuh — the NCCL communicator of a multi-GPU run and the collectives data parallelism with
// ZeRO-1 uses (llmc/zero.h's slices): reduce-scatter of the fp32 gradients, all-gather of the
// updated parameters, all-reduce of scalars (loss, squared gradient norm). One process per GPU; the
// GPU is the process's local rank (llmc/launch.h) modulo the node's device count.
//
// Errors: every NCCL call is checked and a failure names the rank, the call and NCCL's last error;
// collectives are then waited for by nccl_wait, which polls the stream and ncclCommGetAsyncError with
// a timeout, so that a rank whose peer died ends with a message (and ncclCommAbort) instead of
// hanging in a collective forever.
#pragma once
#include <nccl.h>
#include <time.h>
#include "cuda_common.cuh"
#include "launch.h"

typedef struct {
    ncclComm_t comm;
    int rank, world, device;
    double timeout_s;  // nccl_wait gives up after this long (default 600 s; CODA_NCCL_TIMEOUT overrides)
} NcclCtx;

static inline void nccl__fail(const NcclCtx* c, ncclResult_t r, const char* call, const char* file, int line) {
    fprintf(stderr, "rank %d: %s failed (%s:%d): %s%s%s\n", c->rank, call, file, line, ncclGetErrorString(r),
            c->comm ? "; NCCL: " : "", c->comm ? ncclGetLastError(c->comm) : "");
    if (c->comm) ncclCommAbort(c->comm);
    exit(1);
}
#define ncclCheck(ctx, call)                                                           \
    do {                                                                               \
        const ncclResult_t nccl_r_ = (call);                                           \
        if (nccl_r_ != ncclSuccess) nccl__fail((ctx), nccl_r_, #call, __FILE__, __LINE__); \
    } while (0)

// The id of rank 0 to every rank: share(li, id, n, err) is launch_mpi_share_id under mpirun, or
// launch_share_id_file for --nccl-init file:PATH (NULL with one process).
typedef int (*NcclShareId)(const LaunchInfo* li, void* id, int n, CodaError* err);

// The file rendezvous as an NcclShareId: a file older than this rank's launch_resolve (less a minute
// for clock skew between nodes) is an earlier job's and is not taken.
static inline int launch_share_id_file(const LaunchInfo* li, void* id, int n, CodaError* err) {
    if (li->rank == 0) return launch_file_publish(li->path, id, (size_t)n, err);
    return launch_file_wait(li->path, id, (size_t)n, 600.0, li->started - 60, err);
}

// Picks the GPU (local rank modulo the devices), creates the communicator of li's world. With one
// process and no share function the id is this process's own.
static inline int nccl_init(NcclCtx* c, const LaunchInfo* li, NcclShareId share, CodaError* err) {
    memset(c, 0, sizeof(*c));
    c->rank = li->rank;
    c->world = li->world;
    c->timeout_s = 600.0;
    if (getenv("CODA_NCCL_TIMEOUT")) c->timeout_s = atof(getenv("CODA_NCCL_TIMEOUT"));
    launch_default_env();
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) return coda_errorf(err, "rank %d: no CUDA device", li->rank);
    c->device = li->local_rank % n_dev;
    cudaCheck(cudaSetDevice(c->device));
    ncclUniqueId id;
    memset(&id, 0, sizeof(id));
    static_assert(sizeof(ncclUniqueId) == LAUNCH_ID_BYTES, "launch.h's id size is NCCL's");
    if (li->rank == 0) ncclCheck(c, ncclGetUniqueId(&id));
    if (li->world > 1) {
        if (!share) return coda_errorf(err, "rank %d of %d: no way to share the NCCL id (--nccl-init mpi or file:PATH)", li->rank, li->world);
        if (share(li, &id, (int)sizeof(id), err) != 0) return -1;
    }
    ncclCheck(c, ncclCommInitRank(&c->comm, li->world, id, li->rank));
    return 0;
}

static inline void nccl_free(NcclCtx* c) {
    if (c->comm) ncclCommDestroy(c->comm);
    memset(c, 0, sizeof(*c));
}

// Waits for the stream's work (its collectives), checking NCCL's asynchronous errors as it goes; on
// an error or after timeout_s the communicator is aborted and the process ends with a message.
static inline void nccl_wait(const NcclCtx* c, cudaStream_t stream, const char* what) {
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        const cudaError_t q = cudaStreamQuery(stream);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) {
            fprintf(stderr, "rank %d: %s: CUDA error %s\n", c->rank, what, cudaGetErrorString(q));
            ncclCommAbort(c->comm);
            exit(1);
        }
        ncclResult_t ae = ncclSuccess;
        ncclCheck(c, ncclCommGetAsyncError(c->comm, &ae));
        if (ae != ncclSuccess && ae != ncclInProgress) nccl__fail(c, ae, what, __FILE__, __LINE__);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) + 1e-9 * (now.tv_nsec - t0.tv_nsec) > c->timeout_s) {
            fprintf(stderr, "rank %d: %s did not finish within %.0f s (a peer rank stopped?); aborting the communicator\n", c->rank, what,
                    c->timeout_s);
            ncclCommAbort(c->comm);
            exit(1);
        }
        usleep(100);
    }
}

// Sum over ranks of send [world * count] fp32; rank r keeps elements [r*count, (r+1)*count) in recv.
static inline void nccl_reduce_scatter_f32(const NcclCtx* c, const float* send, float* recv, size_t count, cudaStream_t stream) {
    ncclCheck(c, ncclReduceScatter(send, recv, count, ncclFloat32, ncclSum, c->comm, stream));
}
// Every rank's count elements of send into recv [world * count], rank order (floatX parameters).
static inline void nccl_all_gather_x(const NcclCtx* c, const floatX* send, floatX* recv, size_t count, cudaStream_t stream) {
    ncclCheck(c, ncclAllGather(send, recv, count, sizeof(floatX) == 4 ? ncclFloat32 : ncclBfloat16, c->comm, stream));
}
// Sum over ranks, in place or not (scalars: the loss sum, the squared gradient norm).
static inline void nccl_all_reduce_f32(const NcclCtx* c, const float* send, float* recv, size_t count, cudaStream_t stream) {
    ncclCheck(c, ncclAllReduce(send, recv, count, ncclFloat32, ncclSum, c->comm, stream));
}
// The same in fp64 (host-side sums for logging and agreement: losses, token counts, failure flags).
static inline void nccl_all_reduce_f64(const NcclCtx* c, const double* send, double* recv, size_t count, cudaStream_t stream) {
    ncclCheck(c, ncclAllReduce(send, recv, count, ncclFloat64, ncclSum, c->comm, stream));
}

// launch.h — how the processes of a multi-GPU run find each other (host side, no CUDA, no MPI):
// which rank this process is, how many there are, which GPU of its node it takes, and how rank 0's
// NCCL unique id reaches every rank. Two starts (docs/design.md, multi-GPU):
//   mpirun -np N ./train_coda ...          ranks from OpenMPI's environment (OMPI_COMM_WORLD_RANK, _SIZE,
//                                          _LOCAL_RANK); the id is broadcast over MPI (launch_mpi.h)
//   ./train_coda --nccl-init file:PATH --rank R --world N [--local-rank L] ...
//                                          no MPI: rank 0 writes the id to PATH on a file system every
//                                          rank sees (atomically: a temporary file, then rename), the
//                                          others wait for it; PATH must not exist when the job starts
//                                          (a stale file from an earlier job is refused by rank 0, and
//                                          ignored by the others if older than their own start)
// A single process (no MPI environment, no flags) is rank 0 of 1 and needs no id.
// NCCL_NVLS_ENABLE=0 is set unless the user set it (NVLink multicast off: see the README).
#pragma once
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

#define LAUNCH_ID_BYTES 128  // sizeof(ncclUniqueId)

typedef enum { LAUNCH_SINGLE = 0, LAUNCH_MPI = 1, LAUNCH_FILE = 2 } LaunchKind;

typedef struct {
    LaunchKind kind;
    int rank, world, local_rank;
    char path[1024];  // LAUNCH_FILE: the rendezvous file
    time_t started;   // when launch_resolve ran: a rendezvous file older than this (less a margin) is stale
} LaunchInfo;

// An integer environment variable: 1 and *out set if present and valid, 0 if absent, -1 (err) if malformed.
static inline int launch__env_int(const char* name, int* out, CodaError* err) {
    const char* v = getenv(name);
    if (!v || !*v) return 0;
    char* end = NULL;
    errno = 0;
    const long x = strtol(v, &end, 10);
    if (errno || *end || x < 0 || x > 1000000) return coda_errorf(err, "environment %s=%s: expected a non-negative integer", name, v);
    *out = (int)x;
    return 1;
}

// From the flags (init: NULL or "mpi" or "file:PATH"; rank/world/local_rank: -1 = not given) and the
// environment. Every inconsistency is an error naming what is wrong.
static inline int launch_resolve(const char* init, int rank, int world, int local_rank, LaunchInfo* li, CodaError* err) {
    memset(li, 0, sizeof(*li));
    li->started = time(NULL);
    int er = -1, ew = -1, el = -1;
    if (launch__env_int("OMPI_COMM_WORLD_RANK", &er, err) < 0 || launch__env_int("OMPI_COMM_WORLD_SIZE", &ew, err) < 0 ||
        launch__env_int("OMPI_COMM_WORLD_LOCAL_RANK", &el, err) < 0)
        return -1;
    const int under_mpi = er >= 0 && ew >= 1;
    if (!init) init = under_mpi ? "mpi" : "single";
    if (!strcmp(init, "single")) {
        if ((world > 1) || (rank > 0)) return coda_errorf(err, "--rank / --world for several processes need --nccl-init (mpi or file:PATH)");
        if (under_mpi && ew > 1) return coda_errorf(err, "started by mpirun with %d processes but --nccl-init single", ew);
        li->kind = LAUNCH_SINGLE;
        li->world = 1;
        return 0;
    }
    if (!strcmp(init, "mpi")) {
        if (!under_mpi)
            return coda_errorf(err, "--nccl-init mpi: no OpenMPI environment (OMPI_COMM_WORLD_RANK / _SIZE); start with mpirun -np N, "
                                    "or use --nccl-init file:PATH --rank R --world N");
        if (rank >= 0 || world >= 0) return coda_errorf(err, "--rank / --world are taken from mpirun; do not give them with --nccl-init mpi");
        li->kind = LAUNCH_MPI;
        li->rank = er;
        li->world = ew;
        li->local_rank = el >= 0 ? el : (local_rank >= 0 ? local_rank : 0);
    } else if (!strncmp(init, "file:", 5)) {
        if (!init[5]) return coda_errorf(err, "--nccl-init file:PATH: the path is empty");
        if (strlen(init + 5) >= sizeof(li->path) - 8) return coda_errorf(err, "--nccl-init file:PATH: the path is too long");
        li->kind = LAUNCH_FILE;
        li->rank = rank >= 0 ? rank : er;
        li->world = world >= 0 ? world : ew;
        if (li->rank < 0 || li->world < 1) return coda_errorf(err, "--nccl-init file:PATH needs --rank R and --world N");
        li->local_rank = local_rank >= 0 ? local_rank : (el >= 0 ? el : li->rank);
        snprintf(li->path, sizeof(li->path), "%s", init + 5);
    } else {
        return coda_errorf(err, "--nccl-init %s: expected single, mpi or file:PATH", init);
    }
    if (li->rank >= li->world) return coda_errorf(err, "rank %d is outside a world of %d processes", li->rank, li->world);
    return 0;
}

// NVLink multicast (NVLS) off unless the user chose: the lent multi-GPU machines need it off.
static inline void launch_default_env(void) { setenv("NCCL_NVLS_ENABLE", "0", 0); }

// Rank 0: the id into path, atomically (written to path.tmp.PID, then renamed). Refuses a path that
// already exists (a stale file from an earlier job would hand the other ranks the wrong id).
static inline int launch_file_publish(const char* path, const void* id, size_t n, CodaError* err) {
    struct stat st;
    if (stat(path, &st) == 0)
        return coda_errorf(err, "--nccl-init file:%s: the file already exists (an earlier job's?); remove it or use a fresh path", path);
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE* f = fopen(tmp, "wb");
    if (!f) return coda_errorf(err, "--nccl-init file:%s: cannot write %s: %s", path, tmp, strerror(errno));
    const uint32_t magic = 0x4c444f43u;  // "CODL"
    const int ok = fwrite(&magic, sizeof(magic), 1, f) == 1 && fwrite(id, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0 || !ok) {
        unlink(tmp);
        return coda_errorf(err, "--nccl-init file:%s: writing %s failed: %s", path, tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        const int e = errno;
        unlink(tmp);
        return coda_errorf(err, "--nccl-init file:%s: rename from %s failed: %s", path, tmp, strerror(e));
    }
    return 0;
}

// Ranks > 0: waits (polling) up to timeout_s for path, written by rank 0 of this job: a file older
// than not_before (this process's start, minus a margin for clock skew) is an earlier job's and is
// not taken. Reads the id into id[0, n).
static inline int launch_file_wait(const char* path, void* id, size_t n, double timeout_s, time_t not_before, CodaError* err) {
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct stat st;
        if (stat(path, &st) == 0 && st.st_mtime >= not_before && (size_t)st.st_size == 4 + n) {
            FILE* f = fopen(path, "rb");
            uint32_t magic = 0;
            const int ok = f && fread(&magic, sizeof(magic), 1, f) == 1 && magic == 0x4c444f43u && fread(id, 1, n, f) == n;
            if (f) fclose(f);
            if (ok) return 0;
            return coda_errorf(err, "--nccl-init file:%s: not a rendezvous file of coda.c (%zu bytes expected)", path, 4 + n);
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) + 1e-9 * (now.tv_nsec - t0.tv_nsec) > timeout_s)
            return coda_errorf(err, "--nccl-init file:%s: rank 0 did not publish the NCCL id within %.0f s (is rank 0 running, with the "
                                    "same path, on a file system this node sees? a stale file older than this process is ignored)",
                               path, timeout_s);
        usleep(20000);
    }
}

// launch_mpi.h — the MPI half of launch.h: under mpirun, rank 0's NCCL unique id is broadcast over
// MPI_COMM_WORLD. Every MPI call is checked; a failure names the rank and the call and aborts the
// whole job (MPI_Abort), so that no rank is left waiting. Built only where mpi.h is (OpenMPI:
// Debian's libopenmpi-dev; compile with mpicc, or -I/usr/lib/x86_64-linux-gnu/openmpi/include).
#pragma once
#include <mpi.h>
#include "launch.h"

static inline void launch__mpi_check(int rc, const char* call, const char* file, int line) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0, rank = -1;
    MPI_Error_string(rc, msg, &len);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "rank %d: %s failed (%s:%d): %s\n", rank, call, file, line, msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
}
#define mpiCheck(call) launch__mpi_check((call), #call, __FILE__, __LINE__)

// MPI_Init, with errors returned to the caller (then checked by mpiCheck) instead of MPI's default abort.
static inline void launch_mpi_init(int* argc, char*** argv) {
    mpiCheck(MPI_Init(argc, argv));
    mpiCheck(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
}

// Checks that mpirun's environment (launch_resolve) and MPI agree, then broadcasts id[0, n) from rank 0.
static inline int launch_mpi_share_id(const LaunchInfo* li, void* id, int n, CodaError* err) {
    int rank = -1, world = 0;
    mpiCheck(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    mpiCheck(MPI_Comm_size(MPI_COMM_WORLD, &world));
    if (rank != li->rank || world != li->world)
        return coda_errorf(err, "MPI says rank %d of %d, the environment said %d of %d", rank, world, li->rank, li->world);
    mpiCheck(MPI_Bcast(id, n, MPI_BYTE, 0, MPI_COMM_WORLD));
    return 0;
}

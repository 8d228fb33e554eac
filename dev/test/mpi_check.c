// mpi_check.c — run as `mpirun -np N build/mpi_check`: every rank resolves itself from mpirun's
// environment (llmc/launch.h), rank 0's 128-byte id reaches every rank over MPI (llmc/launch_mpi.h),
// and the ranks agree on it (min and max of a checksum over all ranks); then the same id through
// the file rendezvous (rank 0 publishes, the others wait). Prints "ok ..." on rank 0, exits 0.
#include "llmc/launch_mpi.h"

static uint64_t sum_bytes(const unsigned char* p, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

int main(int argc, char** argv) {
    const time_t started = time(NULL) - 5;
    launch_mpi_init(&argc, &argv);
    LaunchInfo li;
    CodaError err;
    if (launch_resolve(NULL, -1, -1, -1, &li, &err) != 0 || li.kind != LAUNCH_MPI) {
        fprintf(stderr, "launch_resolve: %s\n", li.kind != LAUNCH_MPI ? "not an MPI launch" : err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    unsigned char id[LAUNCH_ID_BYTES];
    for (int i = 0; i < LAUNCH_ID_BYTES; i++) id[i] = li.rank == 0 ? (unsigned char)(i * 37 + (int)getpid()) : 0;
    if (launch_mpi_share_id(&li, id, LAUNCH_ID_BYTES, &err) != 0) { fprintf(stderr, "%s\n", err.msg); MPI_Abort(MPI_COMM_WORLD, 1); }
    unsigned long long h = sum_bytes(id, LAUNCH_ID_BYTES), lo = 0, hi = 0;
    mpiCheck(MPI_Allreduce(&h, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD));
    mpiCheck(MPI_Allreduce(&h, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD));
    if (lo != hi) { fprintf(stderr, "rank %d: the broadcast id differs between ranks\n", li.rank); MPI_Abort(MPI_COMM_WORLD, 1); }
    // the file rendezvous, in a directory rank 0 names
    char path[256] = {0};
    if (li.rank == 0) snprintf(path, sizeof(path), "/tmp/coda_mpi_check_%d.id", (int)getpid());
    mpiCheck(MPI_Bcast(path, sizeof(path), MPI_CHAR, 0, MPI_COMM_WORLD));
    unsigned char got[LAUNCH_ID_BYTES];
    memset(got, 0, sizeof(got));
    int rc = li.rank == 0 ? launch_file_publish(path, id, LAUNCH_ID_BYTES, &err) : launch_file_wait(path, got, LAUNCH_ID_BYTES, 30.0, started, &err);
    if (rc != 0) { fprintf(stderr, "rank %d: %s\n", li.rank, err.msg); MPI_Abort(MPI_COMM_WORLD, 1); }
    if (li.rank > 0 && memcmp(got, id, sizeof(id)) != 0) { fprintf(stderr, "rank %d: the file's id differs\n", li.rank); MPI_Abort(MPI_COMM_WORLD, 1); }
    mpiCheck(MPI_Barrier(MPI_COMM_WORLD));
    if (li.rank == 0) {
        unlink(path);
        printf("ok: %d ranks, local ranks from mpirun, the 128-byte id equal on every rank over MPI_Bcast and over the file rendezvous\n", li.world);
    }
    MPI_Finalize();
    return 0;
}

// test_launch.h — how the processes of a multi-GPU run find each other (llmc/launch.h,
// launch_mpi.h), on the CPU:
//   * launch_resolve: a single process; mpirun's environment; --nccl-init file:PATH with --rank/--world;
//     every inconsistent combination refused with a message naming it;
//   * the file rendezvous across forked processes: rank 0 publishes late, every other rank gets the
//     same id; a path that already exists is refused by rank 0; a file older than the waiter is
//     ignored (timeout with a message); a foreign file is refused;
//   * mpirun -np 2 build/mpi_check: the id over MPI_Bcast and over the file rendezvous (SKIPs without
//     OpenMPI: Debian's libopenmpi-dev + openmpi-bin).
#pragma once
#include <sys/time.h>
#include <sys/wait.h>
#include <utime.h>
#include "../../llmc/launch.h"
#include "test_torch_pt.h"  // ptt_run

// Sets (value != NULL) or unsets the OpenMPI variables for one launch_resolve call.
static void lt_env(const char* rank, const char* size, const char* local) {
    const char* names[3] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"};
    const char* vals[3] = {rank, size, local};
    for (int i = 0; i < 3; i++) {
        if (vals[i]) setenv(names[i], vals[i], 1);
        else unsetenv(names[i]);
    }
}

TEST(launch_resolve_flags_and_environment) {
    CodaError err;
    LaunchInfo li;
    lt_env(NULL, NULL, NULL);
    CHECK(launch_resolve(NULL, -1, -1, -1, &li, &err) == 0 && li.kind == LAUNCH_SINGLE && li.world == 1 && li.rank == 0, "%s", err.msg);
    CHECK(launch_resolve(NULL, 1, 2, -1, &li, &err) != 0 && strstr(err.msg, "--nccl-init"), "%s", err.msg);
    CHECK(launch_resolve("mpi", -1, -1, -1, &li, &err) != 0 && strstr(err.msg, "mpirun"), "%s", err.msg);
    CHECK(launch_resolve("file:/tmp/x", -1, -1, -1, &li, &err) != 0 && strstr(err.msg, "--rank"), "%s", err.msg);
    CHECK(launch_resolve("file:/tmp/x", 3, 2, -1, &li, &err) != 0 && strstr(err.msg, "outside"), "%s", err.msg);
    CHECK(launch_resolve("file:", 0, 2, -1, &li, &err) != 0 && strstr(err.msg, "empty"), "%s", err.msg);
    CHECK(launch_resolve("tcp:host", 0, 2, -1, &li, &err) != 0 && strstr(err.msg, "single, mpi or file"), "%s", err.msg);
    CHECK(launch_resolve("file:/tmp/x", 1, 4, -1, &li, &err) == 0 && li.kind == LAUNCH_FILE && li.rank == 1 && li.world == 4 &&
              li.local_rank == 1 && !strcmp(li.path, "/tmp/x"), "%s", err.msg);
    CHECK(launch_resolve("file:/tmp/x", 5, 8, 1, &li, &err) == 0 && li.local_rank == 1, "--local-rank is taken");
    lt_env("3", "4", "1");  // as mpirun -np 4 sets it, for the rank on its node's second GPU
    CHECK(launch_resolve(NULL, -1, -1, -1, &li, &err) == 0 && li.kind == LAUNCH_MPI && li.rank == 3 && li.world == 4 && li.local_rank == 1,
          "%s", err.msg);
    CHECK(launch_resolve("mpi", 0, 4, -1, &li, &err) != 0 && strstr(err.msg, "taken from mpirun"), "%s", err.msg);
    CHECK(launch_resolve("single", -1, -1, -1, &li, &err) != 0 && strstr(err.msg, "4 processes"), "%s", err.msg);
    lt_env("x", "4", NULL);
    CHECK(launch_resolve(NULL, -1, -1, -1, &li, &err) != 0 && strstr(err.msg, "OMPI_COMM_WORLD_RANK=x"), "%s", err.msg);
    lt_env(NULL, NULL, NULL);
    unsetenv("NCCL_NVLS_ENABLE");
    launch_default_env();
    CHECK(getenv("NCCL_NVLS_ENABLE") && !strcmp(getenv("NCCL_NVLS_ENABLE"), "0"), "NVLS off by default");
    setenv("NCCL_NVLS_ENABLE", "1", 1);
    launch_default_env();
    CHECK(!strcmp(getenv("NCCL_NVLS_ENABLE"), "1"), "the user's NCCL_NVLS_ENABLE is kept");
    unsetenv("NCCL_NVLS_ENABLE");
}

TEST(launch_file_rendezvous_across_processes) {
    char dir[64], path[128];
    test_mkdtemp(dir, sizeof(dir), "launch");
    snprintf(path, sizeof(path), "%s/nccl.id", dir);
    unsigned char id[LAUNCH_ID_BYTES];
    for (int i = 0; i < LAUNCH_ID_BYTES; i++) id[i] = (unsigned char)(i * 29 + 7);
    const time_t started = time(NULL) - 5;
    const int n_wait = 3;
    pid_t kids[n_wait + 1];
    for (int r = 0; r <= n_wait; r++) {
        fflush(stdout);
        kids[r] = fork();
        if (kids[r] == 0) {
            CodaError e;
            if (r == 0) {  // rank 0 comes late
                usleep(150000);
                _exit(launch_file_publish(path, id, sizeof(id), &e) == 0 ? 0 : 1);
            }
            unsigned char got[LAUNCH_ID_BYTES];
            if (launch_file_wait(path, got, sizeof(got), 10.0, started, &e) != 0) _exit(2);
            _exit(memcmp(got, id, sizeof(id)) == 0 ? 0 : 3);
        }
    }
    for (int r = 0; r <= n_wait; r++) {
        int st = 0;
        CHECK(waitpid(kids[r], &st, 0) == kids[r] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "rank %d ended with status %d", r,
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    CodaError err;
    CHECK(launch_file_publish(path, id, sizeof(id), &err) != 0 && strstr(err.msg, "already exists"), "a stale file is refused: %s", err.msg);
    struct utimbuf old = {started - 3600, started - 3600};  // an earlier job's file: not taken, the wait times out
    CHECK(utime(path, &old) == 0, "utime");
    unsigned char got[LAUNCH_ID_BYTES];
    CHECK(launch_file_wait(path, got, sizeof(got), 0.2, started, &err) != 0 && strstr(err.msg, "did not publish"), "%s", err.msg);
    FILE* f = fopen(path, "wb");
    for (int i = 0; i < 4 + LAUNCH_ID_BYTES; i++) fputc('z', f);
    fclose(f);
    CHECK(launch_file_wait(path, got, sizeof(got), 1.0, started, &err) != 0 && strstr(err.msg, "not a rendezvous file"), "%s", err.msg);
    test_rmtree(dir);
}

TEST(launch_mpirun_two_ranks) {
    if (access("build/mpi_check", X_OK) != 0) {
        test_skip("build/mpi_check is not built (no mpicc: Debian's libopenmpi-dev openmpi-bin; `make test` builds it)");
        return;
    }
    char mpirun[256] = "";
    const char* cands[] = {"/usr/bin/mpirun", "/usr/local/bin/mpirun"};
    for (const char* c : cands)
        if (access(c, X_OK) == 0) { snprintf(mpirun, sizeof(mpirun), "%s", c); break; }
    if (!mpirun[0]) { test_skip("no mpirun (Debian: openmpi-bin)"); return; }
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);  // containers often forbid the cross-memory attach
    const char* argv[] = {mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2", "build/mpi_check", NULL};
    char out[8192];
    const int rc = ptt_run(argv, out, sizeof(out));
    printf("    %s", out);
    CHECK(rc == 0 && strstr(out, "ok: 2 ranks"), "mpirun -np 2 build/mpi_check: exit %d: %s", rc, out);
}

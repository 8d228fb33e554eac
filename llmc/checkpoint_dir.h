// checkpoint_dir.h — the directory side of training checkpoints, host-only (no CUDA):
//   OUT/step_NNNNNNNN/   one checkpoint: config.json + model.safetensors[.index.json] (a Hugging Face
//                        model directory) + train_state.bin (train_state.h)
//   OUT/step_NNNNNNNN.tmp/  a checkpoint being written; renamed to step_NNNNNNNN when complete
//   OUT/LATEST           one line, the name of the newest complete checkpoint; replaced atomically
// checkpoint.cuh writes and reads the files inside a checkpoint for the GPU model.
#pragma once
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"

static inline int ckpt_make_dir(const char* path, CodaError* err) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return coda_errorf(err, "cannot create directory %s: %s", path, strerror(errno));
    return 0;
}

// Removes path and everything under it (symbolic links are removed, not followed).
static inline int ckpt_remove_tree(const char* path, CodaError* err) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : coda_errorf(err, "cannot remove %s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        DIR* d = opendir(path);
        if (!d) return coda_errorf(err, "cannot open directory %s: %s", path, strerror(errno));
        struct dirent* e;
        int rc = 0;
        while (rc == 0 && (e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char child[4352];
            snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
            rc = ckpt_remove_tree(child, err);
        }
        closedir(d);
        if (rc != 0) return rc;
        if (rmdir(path) != 0) return coda_errorf(err, "cannot remove directory %s: %s", path, strerror(errno));
        return 0;
    }
    if (unlink(path) != 0) return coda_errorf(err, "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

static inline void ckpt_step_name(int step, char* name, size_t len) { snprintf(name, len, "step_%08d", step); }

// Reads OUT/LATEST. Returns 0 and the checkpoint directory OUT/NAME in dir; 1 if there is no LATEST;
// -1 if it cannot be read or is empty (the message names the file).
static inline int ckpt_latest_read(const char* out_dir, char* dir, size_t len, CodaError* err) {
    char path[4200], name[256];
    snprintf(path, sizeof(path), "%s/LATEST", out_dir);
    FILE* f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 1 : coda_errorf(err, "cannot read %s: %s", path, strerror(errno));
    if (!fgets(name, sizeof(name), f)) { fclose(f); return coda_errorf(err, "%s is empty", path); }
    fclose(f);
    name[strcspn(name, "\r\n")] = 0;
    snprintf(dir, len, "%s/%s", out_dir, name);
    return 0;
}

// Points OUT/LATEST at checkpoint `name` atomically (written to LATEST.tmp, synced, renamed).
static inline int ckpt_latest_write(const char* out_dir, const char* name, CodaError* err) {
    char latest[4200], tmp[4300];
    snprintf(latest, sizeof(latest), "%s/LATEST", out_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", latest);
    FILE* f = fopen(tmp, "w");
    if (!f) return coda_errorf(err, "cannot write %s: %s", tmp, strerror(errno));
    fprintf(f, "%s\n", name);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fclose(f);
        return coda_errorf(err, "cannot write %s: %s", tmp, strerror(errno));
    }
    if (fclose(f) != 0 || rename(tmp, latest) != 0) return coda_errorf(err, "cannot update %s: %s", latest, strerror(errno));
    return 0;
}

// checkpoint_dir.h — the directory side of training checkpoints, host-only (no CUDA):
//   OUT/step_NNNNNNNN/   one checkpoint: config.json + model.safetensors[.index.json] (a Hugging Face
//                        model directory) + train_state.bin (train_state.h)
//   OUT/step_NNNNNNNN.tmp/  a checkpoint being written; renamed to step_NNNNNNNN when complete
//   OUT/LATEST           one line, the name of the newest complete checkpoint; replaced atomically
// and the housekeeping around them: which directories are complete checkpoints, the .tmp directories
// a killed run leaves (removed at the next start), --keep-last (older complete checkpoints deleted,
// never the one LATEST names), and the checkpoint --resume starts from when LATEST is missing or
// unreadable (the newest complete one). checkpoint.cuh writes and reads the files inside a
// checkpoint for the GPU model.
#pragma once
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"
#include "hf_model.h"
#include "train_state.h"

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

// The step of a checkpoint directory name: "step_" then digits, then `suffix` ("" or ".tmp"), the
// number fitting an int. -1 for any other name.
static inline int ckpt_parse_step(const char* name, const char* suffix) {
    if (strncmp(name, "step_", 5) != 0) return -1;
    const char* p = name + 5;
    long long step = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        step = step * 10 + (*p - '0');
        if (step > INT_MAX) return -1;
    }
    return digits > 0 && strcmp(p, suffix) == 0 ? (int)step : -1;
}

// Copies src into dst[len] (cut if it does not fit: these are messages and listings).
static inline void ckpt__copy(char* dst, size_t len, const char* src) {
    if (!len) return;
    size_t n = strlen(src);
    if (n >= len) n = len - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}
// Appends ", " and item to the list in dst[len] (item alone when the list is empty).
static inline void ckpt__append(char* dst, size_t len, const char* item) {
    size_t used = strlen(dst);
    if (used) ckpt__copy(dst + used, len - used, ", "), used = strlen(dst);
    ckpt__copy(dst + used, len - used, item);
}

static inline int ckpt__is_dir(const char* path) {
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}
static inline int ckpt__is_nonempty_file(const char* path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0;
}
// A directory of out_dir named step_N (a checkpoint) or step_N.tmp (one being written).
typedef struct {
    int step;
    char name[256];
} CkptEntry;
static inline int ckpt__cmp_step(const void* a, const void* b) {
    int x = ((const CkptEntry*)a)->step, y = ((const CkptEntry*)b)->step;
    return x < y ? -1 : x > y;
}

// The directories named step_N<suffix> in out_dir ("": checkpoints, ".tmp": unfinished ones) by
// ascending step, into *entries (malloc'd; NULL when there are none).
static inline int ckpt_list(const char* out_dir, const char* suffix, CkptEntry** entries, int* n, CodaError* err) {
    *entries = NULL;
    *n = 0;
    DIR* d = opendir(out_dir);
    if (!d) return coda_errorf(err, "cannot open directory %s: %s", out_dir, strerror(errno));
    int cap = 0;
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        int step = ckpt_parse_step(e->d_name, suffix);
        if (step < 0) continue;
        char path[4352];
        snprintf(path, sizeof(path), "%s/%s", out_dir, e->d_name);
        if (!ckpt__is_dir(path)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            *entries = (CkptEntry*)realloc(*entries, sizeof(CkptEntry) * cap);
            if (!*entries) coda_fatal("out of memory listing %s", out_dir);
        }
        (*entries)[*n].step = step;
        snprintf((*entries)[*n].name, sizeof((*entries)[*n].name), "%s", e->d_name);
        (*n)++;
    }
    closedir(d);
    if (*n) qsort(*entries, (size_t)*n, sizeof(CkptEntry), ckpt__cmp_step);
    return 0;
}

// Whether dir is a complete checkpoint: a config.json that parses, the weights (model.safetensors or
// its index), and a train_state.bin whose header agrees with its size. If not, *why says what is
// wrong (naming the file). The weights and the state's checksum are verified only when resumed.
static inline int ckpt_is_complete(const char* dir, CodaError* why) {
    char path[4400];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    ModelConfig c;
    if (config_read_hf(path, &c, why) != 0) return 0;
    char single[4400], index[4400];
    snprintf(single, sizeof(single), "%s/%s", dir, HF_SINGLE_NAME);
    snprintf(index, sizeof(index), "%s/%s", dir, HF_INDEX_NAME);
    if (!ckpt__is_nonempty_file(single) && !ckpt__is_nonempty_file(index)) {
        coda_errorf(why, "%s has no model weights (%s or %s)", dir, HF_SINGLE_NAME, HF_INDEX_NAME);
        return 0;
    }
    snprintf(path, sizeof(path), "%s/train_state.bin", dir);
    TrainStateHeader h;
    return train_state_open(path, NULL, &h, NULL, why) == 0;
}

// Removes the step_N.tmp directories a killed run left in out_dir. *n_removed says how many; their
// paths go into `names` (", "-separated, cut to len).
static inline int ckpt_remove_unfinished(const char* out_dir, int* n_removed, char* names, size_t len, CodaError* err) {
    *n_removed = 0;
    if (len) names[0] = 0;
    CkptEntry* e;
    int n;
    if (ckpt_list(out_dir, ".tmp", &e, &n, err) != 0) return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", out_dir, e[i].name);
        rc = ckpt_remove_tree(path, err);
        if (rc == 0) {
            (*n_removed)++;
            if (len) ckpt__append(names, len, path);
        }
    }
    free(e);
    return rc;
}

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

// Points OUT/LATEST at checkpoint `name` atomically (written to a new temporary file beside it,
// synced, renamed over it; two writers never share the temporary file).
static inline int ckpt_latest_write(const char* out_dir, const char* name, CodaError* err) {
    char latest[4200], tmp[4300];
    snprintf(latest, sizeof(latest), "%s/LATEST", out_dir);
    FILE* f = coda_create_temp_beside(latest, tmp, sizeof(tmp), err);
    if (!f) return -1;
    fprintf(f, "%s\n", name);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        int e = errno;
        fclose(f);
        unlink(tmp);
        return coda_errorf(err, "cannot write %s: %s", tmp, strerror(e));
    }
    if (fclose(f) != 0 || rename(tmp, latest) != 0) {
        int e = errno;
        unlink(tmp);
        return coda_errorf(err, "cannot update %s: %s", latest, strerror(e));
    }
    return 0;
}

// --keep-last: deletes the complete checkpoints of out_dir older than its newest keep_last complete
// ones, never the one LATEST names (incomplete directories are left alone: they are not ours to
// judge). keep_last <= 0 keeps everything. *n_removed and `names` (", "-separated) say what went.
static inline int ckpt_prune(const char* out_dir, int keep_last, int* n_removed, char* names, size_t len, CodaError* err) {
    *n_removed = 0;
    if (len) names[0] = 0;
    if (keep_last <= 0) return 0;
    char latest[4200] = "";
    if (ckpt_latest_read(out_dir, latest, sizeof(latest), NULL) != 0) latest[0] = 0;
    CkptEntry* e;
    int n;
    if (ckpt_list(out_dir, "", &e, &n, err) != 0) return -1;
    int kept = 0, rc = 0;
    for (int i = n - 1; i >= 0 && rc == 0; i--) {  // newest first
        char dir[4400];
        snprintf(dir, sizeof(dir), "%s/%s", out_dir, e[i].name);
        CodaError why;
        if (!ckpt_is_complete(dir, &why)) continue;
        if (kept < keep_last) { kept++; continue; }
        if (strcmp(dir, latest) == 0) continue;
        rc = ckpt_remove_tree(dir, err);
        if (rc == 0) {
            (*n_removed)++;
            if (len) ckpt__append(names, len, dir);
        }
    }
    free(e);
    return rc;
}

// The checkpoint --resume starts from, into dir: the one OUT/LATEST names when LATEST is readable and
// that checkpoint is complete. Otherwise the newest complete checkpoint (older than the one LATEST
// names, if it names one), and *note says why LATEST was not used and which one is. Returns 0 with
// dir; 1 when out_dir has no LATEST and no checkpoint directory (a fresh start); -1 when there are
// checkpoints but none is complete (the message says what is wrong with the newest), or on a
// file-system error.
static inline int ckpt_find_resume(const char* out_dir, char* dir, size_t len, char* note, size_t note_len, CodaError* err) {
    if (note_len) note[0] = 0;
    char latest[4200];
    CodaError why;
    char reason[1400];
    int below = INT_MAX;  // fall back to checkpoints older than this step
    int lr = ckpt_latest_read(out_dir, latest, sizeof(latest), &why);
    if (lr == 0) {
        const char* name = latest + strlen(out_dir) + 1;
        int step = ckpt_parse_step(name, "");
        if (step < 0) {
            snprintf(reason, sizeof(reason), "%.600s/LATEST names '%.200s', which is not a checkpoint directory name", out_dir, name);
        } else if (!ckpt__is_dir(latest)) {
            snprintf(reason, sizeof(reason), "%.600s/LATEST names %.600s, which does not exist", out_dir, latest);
            below = step;
        } else if (!ckpt_is_complete(latest, &why)) {
            snprintf(reason, sizeof(reason), "%.300s/LATEST names %.300s, which is not complete (%.700s)", out_dir, latest, why.msg);
            below = step;
        } else {
            ckpt__copy(dir, len, latest);
            return 0;
        }
    } else if (lr == 1) {
        snprintf(reason, sizeof(reason), "%.1000s/LATEST is missing", out_dir);
    } else {
        ckpt__copy(reason, sizeof(reason), why.msg);  // unreadable or empty: the message names the file
    }
    CkptEntry* e;
    int n;
    if (ckpt_list(out_dir, "", &e, &n, err) != 0) return -1;
    int rc = -1;
    char newest_why[1100] = "";
    for (int i = n - 1; i >= 0 && rc != 0; i--) {
        if (e[i].step >= below) continue;
        char cand[4400];
        snprintf(cand, sizeof(cand), "%s/%s", out_dir, e[i].name);
        if (ckpt_is_complete(cand, &why)) {
            ckpt__copy(dir, len, cand);
            if (note_len) {
                ckpt__copy(note, note_len, reason);
                ckpt__append(note, note_len, below < INT_MAX ? "resuming from the newest complete earlier checkpoint:" : "resuming from the newest complete checkpoint:");
                ckpt__copy(note + strlen(note), note_len - strlen(note), " ");
                ckpt__copy(note + strlen(note), note_len - strlen(note), cand);
            }
            rc = 0;
        } else if (!newest_why[0]) {
            ckpt__copy(newest_why, sizeof(newest_why), why.msg);
        }
    }
    free(e);
    if (rc == 0) return 0;
    if (lr == 1 && n == 0) return 1;  // nothing was ever saved here
    if (newest_why[0])
        return coda_errorf(err, "cannot resume: %s, and no %scheckpoint in %s is complete (the newest: %s)", reason,
                           below < INT_MAX ? "earlier " : "", out_dir, newest_why);
    return coda_errorf(err, "cannot resume: %s, and there is no %scheckpoint in %s", reason, below < INT_MAX ? "earlier " : "", out_dir);
}

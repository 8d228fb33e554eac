// checkpoint.cuh — training checkpoints of the GPU model (model.cuh): save, load the weights of any
// model directory, resume. A checkpoint OUT/step_NNNNNNNN/ holds config.json and model.safetensors
// (the floatX parameters exactly as trained: a Hugging Face model directory) and train_state.bin
// (fp32 masters and AdamW moments, step, data position: train_state.h). It is written into
// step_NNNNNNNN.tmp/ and renamed, then OUT/LATEST is replaced atomically (checkpoint_dir.h): a
// crash never leaves a corrupt latest checkpoint.
#pragma once
#include <errno.h>
#include "checkpoint_dir.h"
#include "dataloader.h"
#include "hf_model.h"
#include "model.cuh"
#include "train_state.h"

static inline int ckpt__write(FILE* f, const void* p, size_t bytes, const char* path, CodaError* err) {
    if (fwrite(p, 1, bytes, f) != bytes) return coda_errorf(err, "write to %s failed: %s", path, strerror(errno));
    return 0;
}

// Copies a device fp32 array to a file through a bounded host buffer, adding its bytes to *sum.
static inline int ckpt__write_device_floats(FILE* f, const float* dev, size_t n, Checksum* sum, const char* path, CodaError* err) {
    size_t chunk = 16u << 20;
    float* buf = (float*)coda_malloc_or_die(sizeof(float) * (n < chunk ? (n ? n : 1) : chunk), "checkpoint staging");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        cudaCheck(cudaMemcpy(buf, dev + i, sizeof(float) * k, cudaMemcpyDeviceToHost));
        checksum_update(sum, buf, sizeof(float) * k);
        rc = ckpt__write(f, buf, sizeof(float) * k, path, err);
    }
    free(buf);
    return rc;
}
// The reverse: file to device, adding the bytes read to *sum.
static inline int ckpt__read_device_floats(FILE* f, float* dev, size_t n, Checksum* sum, const char* path, CodaError* err) {
    size_t chunk = 16u << 20;
    float* buf = (float*)coda_malloc_or_die(sizeof(float) * (n < chunk ? (n ? n : 1) : chunk), "checkpoint staging");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        if (fread(buf, sizeof(float), k, f) != k) {
            rc = coda_errorf(err, "cannot read %s (truncated while reading?): %s", path, ferror(f) ? strerror(errno) : "end of file");
        } else {
            checksum_update(sum, buf, sizeof(float) * k);
            cudaCheck(cudaMemcpy(dev + i, buf, sizeof(float) * k, cudaMemcpyHostToDevice));
        }
    }
    free(buf);
    return rc;
}

// What a train state of this model and run must match.
static inline TrainStateExpect checkpoint_expect(const GpuModel* m, const TrainRun* run) {
    TrainStateExpect e;
    e.n_train = (int64_t)m->n_train;
    e.layout = train_state_layout(&m->table, m->train_offset);
    e.run = *run;
    return e;
}

// The paths of checkpoint `step` in out_dir: OUT/step_NNNNNNNN, written as OUT/step_NNNNNNNN.tmp.
typedef struct {
    char name[64], dir[4200], tmp[4300], state[4400];  // state: tmp/train_state.bin
} CkptPaths;
static inline void checkpoint_paths(const char* out_dir, int step, CkptPaths* p) {
    ckpt_step_name(step, p->name, sizeof(p->name));
    snprintf(p->dir, sizeof(p->dir), "%s/%s", out_dir, p->name);
    snprintf(p->tmp, sizeof(p->tmp), "%s.tmp", p->dir);
    snprintf(p->state, sizeof(p->state), "%s/train_state.bin", p->tmp);
}

// The first part of a save: p->tmp created, with config.json and the weights, the floatX parameters
// exactly as trained (bf16 in the BF16 build).
static inline int checkpoint_write_model(const GpuModel* m, const CkptPaths* p, CodaError* err) {
    char path[4400];
    if (ckpt_make_dir(p->tmp, err) != 0) return -1;
    snprintf(path, sizeof(path), "%s/config.json", p->tmp);
    if (config_write_hf_dtype(path, &m->cfg, FLOATX_DTYPE, err) != 0) return -1;
    void* host = coda_malloc_or_die(sizeof(floatX) * m->table.total, "checkpoint weights");
    cudaCheck(cudaMemcpy(host, m->params, sizeof(floatX) * m->table.total, cudaMemcpyDeviceToHost));
    int rc = hf_save_params(p->tmp, &m->table, host, FLOATX_DTYPE, FLOATX_DTYPE, HF_DEFAULT_SHARD_BYTES, err);
    free(host);
    return rc;
}

// The train state's header of update `step` (checksum 0: it is filled in when the arrays are written).
static inline TrainStateHeader checkpoint_header(const GpuModel* m, int step, const TrainRun* run, DataPosition pos) {
    TrainStateHeader h;
    memset(&h, 0, sizeof(h));
    h.magic = TRAIN_STATE_MAGIC; h.version = TRAIN_STATE_VERSION; h.n_train = (int64_t)m->n_train; h.step = step;
    h.adam_step = m->adam_step; h.data_epoch = (int64_t)pos.epoch; h.data_index = (int64_t)pos.index; h.seed = run->seed;
    h.B = run->B; h.T = run->T; h.accum = run->accum;
    h.layout = (int64_t)train_state_layout(&m->table, m->train_offset);
    return h;
}

// The last part of a save, once everything is in p->tmp: renamed to p->dir, then OUT/LATEST.
static inline int checkpoint_commit(const char* out_dir, const CkptPaths* p, CodaError* err) {
    if (rename(p->tmp, p->dir) != 0) {
        // an older checkpoint of the same step (e.g. after a resume) is replaced
        if (ckpt_remove_tree(p->dir, err) != 0) return -1;
        if (rename(p->tmp, p->dir) != 0) return coda_errorf(err, "cannot rename %s to %s: %s", p->tmp, p->dir, strerror(errno));
    }
    return ckpt_latest_write(out_dir, p->name, err);
}

// Saves update `step` into OUT/step_NNNNNNNN (through step_NNNNNNNN.tmp) and points OUT/LATEST at it.
// (Under ZeRO-1 every rank writes its slices of the state: ddp_checkpoint_save, llmc/ddp.cuh.)
static inline int checkpoint_save(GpuModel* m, const char* out_dir, int step, const TrainRun* run, DataPosition pos, CodaError* err) {
    if (!m->master) return coda_errorf(err, "checkpoint_save: the optimizer state is sharded (ZeRO-1): save with ddp_checkpoint_save");
    CkptPaths p;
    checkpoint_paths(out_dir, step, &p);
    if (checkpoint_write_model(m, &p, err) != 0) return -1;
    const char* path = p.state;
    FILE* f = fopen(path, "wb");
    if (!f) return coda_errorf(err, "cannot write %s: %s", path, strerror(errno));
    TrainStateHeader h = checkpoint_header(m, step, run, pos);
    // the header goes first with checksum 0, the arrays stream through the checksum, then the header
    // is written again with it
    Checksum sum;
    train_state_checksum_begin(&sum, &h);
    if (ckpt__write(f, &h, sizeof(h), path, err) != 0 || ckpt__write_device_floats(f, m->master, m->n_train, &sum, path, err) != 0 ||
        ckpt__write_device_floats(f, m->adam_m, m->n_train, &sum, path, err) != 0 ||
        ckpt__write_device_floats(f, m->adam_v, m->n_train, &sum, path, err) != 0) {
        fclose(f);
        return -1;
    }
    h.checksum = (int64_t)checksum_final(&sum);
    if (fseek(f, 0, SEEK_SET) != 0 || ckpt__write(f, &h, sizeof(h), path, err) != 0) {
        fclose(f);
        return coda_errorf(err, "cannot finish %s: %s", path, strerror(errno));
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fclose(f);
        return coda_errorf(err, "cannot finish %s: %s", path, strerror(errno));
    }
    if (fclose(f) != 0) return coda_errorf(err, "cannot finish %s: %s", path, strerror(errno));
    return checkpoint_commit(out_dir, &p, err);
}

// Loads a model directory's weights into the GPU model (CoDA tensors the directory lacks keep their
// values); *rep says what was loaded. (The masters are not touched: gpu_model_sync_masters.)
static inline int checkpoint_load_weights(GpuModel* m, const char* dir, HfLoadReport* rep, CodaError* err) {
    void* host = coda_malloc_or_die(sizeof(floatX) * m->table.total, "weights staging");
    cudaCheck(cudaMemcpy(host, m->params, sizeof(floatX) * m->table.total, cudaMemcpyDeviceToHost));
    int rc = hf_load_params(dir, &m->table, host, FLOATX_DTYPE, rep, err);
    if (rc == 0) cudaCheck(cudaMemcpy(m->params, host, sizeof(floatX) * m->table.total, cudaMemcpyHostToDevice));
    free(host);
    return rc;
}

// What a resumed run continues from besides the arrays: the optimizer step, the data position, the update.
static inline void checkpoint_resume_counters(GpuModel* m, const TrainStateHeader* h, int* step, DataPosition* pos) {
    m->adam_step = (int)h->adam_step;
    pos->epoch = (uint64_t)h->data_epoch;
    pos->index = (uint64_t)h->data_index;
    *step = (int)h->step;
}

// Resumes from checkpoint directory `dir`: weights, fp32 masters, AdamW moments and step; *step is
// the number of updates done, *pos where the training data continues. The state must be of this
// model and run (train_state_check_header) and pass its checksum. On an error the model's weights
// and optimizer state are partly overwritten: the caller starts again or stops.
static inline int checkpoint_resume(GpuModel* m, const char* dir, const TrainRun* run, HfLoadReport* rep, int* step, DataPosition* pos,
                                    CodaError* err) {
    if (!m->master) return coda_errorf(err, "checkpoint_resume: the optimizer state is sharded (ZeRO-1): resume with ddp_checkpoint_resume");
    char path[4300];
    snprintf(path, sizeof(path), "%s/train_state.bin", dir);
    TrainStateExpect expect = checkpoint_expect(m, run);
    TrainStateHeader h;
    FILE* f;
    if (train_state_open(path, &expect, &h, &f, err) != 0) return -1;  // before any weight is touched
    if (checkpoint_load_weights(m, dir, rep, err) != 0) {
        fclose(f);
        return -1;
    }
    Checksum sum;
    train_state_checksum_begin(&sum, &h);
    if (ckpt__read_device_floats(f, m->master, m->n_train, &sum, path, err) != 0 ||
        ckpt__read_device_floats(f, m->adam_m, m->n_train, &sum, path, err) != 0 ||
        ckpt__read_device_floats(f, m->adam_v, m->n_train, &sum, path, err) != 0) {
        fclose(f);
        return -1;
    }
    fclose(f);
    if (h.version >= 2 && checksum_final(&sum) != (uint64_t)h.checksum) return coda_errorf(err, "%s is damaged: checksum mismatch", path);
    checkpoint_resume_counters(m, &h, step, pos);
    return 0;
}

// test_gpu_nccl.cuh — llmc/nccl.cuh and llmc/ddp.cuh with one rank (the multi-GPU path on one GPU):
//   * the communicator starts from a single-process launch, and reduce-scatter, all-gather and
//     all-reduce over one rank give back their input bit for bit;
//   * ZeRO-1 data parallelism over one rank is the one-GPU training step bit for bit: two copies of a
//     model trained 3 updates, one by gpu_model_update, one by ddp_update, have the same gradient
//     norms, floatX parameters, masters and AdamW moments (phase 0's everything-trainable policy with
//     clipping in every update, and phase 1's attention-only policy, frozen tensors, no clipping);
//     their checkpoints are the same bytes, and ddp_checkpoint_resume restores the ZeRO state.
// (With one rank the NCCL path must equal the non-NCCL one; several ranks: scripts/ on the lent
// multi-GPU machines.)
#pragma once
#include "../../llmc/ddp.cuh"
#include "../../llmc/nccl.cuh"
#include "test_gpu_model.cuh"  // gpu_test_config, gpu_test_adamw, random_tokens

GPU_TEST(gpu_nccl_one_rank_collectives_are_identities) {
    LaunchInfo li;
    CodaError err;
    CHECK(launch_resolve("single", -1, -1, -1, &li, &err) == 0, "%s", err.msg);
    NcclCtx nc;
    CHECK(nccl_init(&nc, &li, NULL, &err) == 0, "%s", err.msg);
    CHECK(getenv("NCCL_NVLS_ENABLE") != NULL, "nccl_init sets NCCL_NVLS_ENABLE unless set");
    const size_t n = 1000003;  // odd: no alignment luck
    std::vector<float> h(n), back(n);
    for (size_t i = 0; i < n; i++) h[i] = (float)sin(0.001 * (double)i) * 3.0f + (float)(i % 7);
    std::vector<floatX> hx(n), backx(n);  // the floatX input as it lies on the device, and the result
    float *a = NULL, *b = NULL;
    floatX *xa = NULL, *xb = NULL;
    cudaCheck(cudaMalloc(&a, n * sizeof(float)));
    cudaCheck(cudaMalloc(&b, n * sizeof(float)));
    cudaCheck(cudaMalloc(&xa, n * sizeof(floatX)));
    cudaCheck(cudaMalloc(&xb, n * sizeof(floatX)));
    cudaStream_t s;
    cudaCheck(cudaStreamCreate(&s));
    cudaCheck(cudaMemcpy(a, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    host_to_floatX(xa, h.data(), n);
    cudaCheck(cudaMemcpy(hx.data(), xa, n * sizeof(floatX), cudaMemcpyDeviceToHost));
    const char* what[3] = {"reduce-scatter", "all-reduce", "all-gather"};
    for (int k = 0; k < 3; k++) {
        cudaCheck(cudaMemset(b, 0xff, n * sizeof(float)));
        cudaCheck(cudaMemset(xb, 0xff, n * sizeof(floatX)));
        if (k == 0) nccl_reduce_scatter_f32(&nc, a, b, n, s);
        if (k == 1) nccl_all_reduce_f32(&nc, a, b, n, s);
        if (k == 2) nccl_all_gather_x(&nc, xa, xb, n, s);
        nccl_wait(&nc, s, what[k]);
        int same;
        if (k < 2) {
            cudaCheck(cudaMemcpy(back.data(), b, n * sizeof(float), cudaMemcpyDeviceToHost));
            same = memcmp(back.data(), h.data(), n * sizeof(float)) == 0;
        } else {
            cudaCheck(cudaMemcpy(backx.data(), xb, n * sizeof(floatX), cudaMemcpyDeviceToHost));
            same = memcmp(backx.data(), hx.data(), n * sizeof(floatX)) == 0;
        }
        CHECK(same, "%s over one rank changed the data", what[k]);
    }
    printf("    one rank on device %d: reduce-scatter, all-reduce, all-gather of %zu elements return their input bitwise\n", nc.device, n);
    cudaCheck(cudaStreamDestroy(s));
    cudaCheck(cudaFree(a)); cudaCheck(cudaFree(b)); cudaCheck(cudaFree(xa)); cudaCheck(cudaFree(xb));
    nccl_free(&nc);
}

// The whole file at path (empty if unreadable).
static std::vector<char> nccl_test_file(const char* path) {
    std::vector<char> b;
    FILE* f = fopen(path, "rb");
    if (!f) return b;
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof(buf), f)) > 0) b.insert(b.end(), buf, buf + k);
    fclose(f);
    return b;
}
// Whether two device buffers hold the same bytes.
static int nccl_test_same_device(const void* a, const void* b, size_t bytes) {
    std::vector<char> x(bytes ? bytes : 1), y(bytes ? bytes : 1);
    cudaCheck(cudaMemcpy(x.data(), a, bytes, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(y.data(), b, bytes, cudaMemcpyDeviceToHost));
    return memcmp(x.data(), y.data(), bytes) == 0;
}
// The Ddp's slices (one rank owns everything: [0, n_train)) against the plain model's full buffers,
// tensor by tensor (alignment gaps excluded: they are never updated by either).
static int nccl_test_state_equal(const GpuModel* a, const Ddp* d, const char* what) {
    int bad = 0;
    for (int i = 0; i < a->table.n; i++) {
        if (a->train_offset[i] < 0) continue;
        const size_t off = (size_t)a->train_offset[i], bytes = sizeof(float) * a->table.tensors[i].numel;
        const float* pa[3] = {a->master, a->adam_m, a->adam_v};
        const float* pd[3] = {d->master, d->adam_m, d->adam_v};
        for (int k = 0; k < 3; k++)
            if (!nccl_test_same_device(pa[k] + off, pd[k] + off, bytes)) {
                if (bad++ < 4) printf("    %s: %s of %s differs\n", what, k == 0 ? "master" : k == 1 ? "adam_m" : "adam_v", a->table.tensors[i].name);
            }
    }
    return bad;
}

static void nccl_ddp_equals_one_gpu(TrainPolicy policy, double clip, const char* what) {
    LaunchInfo li;
    CodaError err;
    CHECK(launch_resolve("single", -1, -1, -1, &li, &err) == 0, "%s", err.msg);
    NcclCtx nc;
    CHECK(nccl_init(&nc, &li, NULL, &err) == 0, "%s", err.msg);  // sets the device before the models
    ModelConfig c = gpu_test_config(1, 0);
    GpuModel a, b;  // a: one GPU; b: ZeRO-1 over a world of one
    gpu_model_create(&a, &c, policy);
    gpu_model_create(&b, &c, policy);
    Ddp d;
    ddp_create(&d, &b, &nc);
    CHECK(b.master == NULL && b.adam_m == NULL && b.adam_v == NULL, "the full-size optimizer state is freed under ZeRO");
    CHECK(d.slice.lo == 0 && d.slice.hi == b.n_train && d.slice.padded >= b.n_train && d.adamw.n_seg == a.adamw.n_seg,
          "one rank owns [0, %zu): [%zu, %zu), %d segments vs %d", b.n_train, d.slice.lo, d.slice.hi, d.adamw.n_seg, a.adamw.n_seg);
    gpu_model_init_random(&a, 31, 0);
    gpu_model_init_random(&b, 31, 0);
    ddp_sync_masters(&b, &d);
    CHECK(nccl_test_state_equal(&a, &d, "after init") == 0, "the slice's masters are the widened parameters");
    const int B = 2, T = 32, n = B * T;
    gpu_model_alloc_acts(&a, B, T, 0, 0);
    gpu_model_alloc_acts(&b, B, T, 0, 0);
    AdamWConfig o = gpu_test_adamw();
    o.grad_clip = clip;
    int tok[64], tgt[64], clipped = 0, bad_norm = 0;
    float na[3], nb[3];
    for (int s = 0; s < 3; s++) {
        random_tokens(tok, n, c.vocab_size, 40 + s);
        random_tokens(tgt, n, c.vocab_size, 50 + s);
        tgt[5] = -1;
        GpuModel* both[2] = {&a, &b};
        double loss[2];
        for (int k = 0; k < 2; k++) {
            gpu_model_zero_grad(both[k]);
            loss[k] = gpu_model_forward(both[k], tok, tgt, 1.0f / (n - 1), NULL);
            gpu_model_backward(both[k]);
        }
        CHECK(memcmp(&loss[0], &loss[1], sizeof(double)) == 0, "%s, update %d: losses %.9g vs %.9g", what, s + 1, loss[0], loss[1]);
        const double lr_scale = 0.5 + 0.25 * s;
        na[s] = gpu_model_update(&a, &o, lr_scale);
        nb[s] = ddp_update(&b, &d, &o, lr_scale);
        bad_norm += memcmp(&na[s], &nb[s], sizeof(float)) != 0;
        clipped += clip > 0 && na[s] > clip;
        if (s == 2)  // the reduce-scattered gradient of one rank is the gradient
            CHECK(nccl_test_same_device(a.grad, d.grad, sizeof(float) * a.n_train), "%s: the slice's gradient differs", what);
    }
    printf("    %s: norms %.6g %.6g %.6g (one GPU) vs %.6g %.6g %.6g (ZeRO, one rank), %d of 3 clipped\n", what, na[0], na[1], na[2], nb[0], nb[1],
           nb[2], clipped);
    CHECK(bad_norm == 0, "%s: %d gradient norms differ", what, bad_norm);
    CHECK(clip <= 0 ? clipped == 0 : clipped == 3, "%s: clipping in %d of 3 updates", what, clipped);
    CHECK(a.adam_step == 3 && b.adam_step == 3, "adam steps %d, %d", a.adam_step, b.adam_step);
    CHECK(nccl_test_same_device(a.params, b.params, sizeof(floatX) * a.table.total), "%s: the floatX parameters differ", what);
    CHECK(nccl_test_state_equal(&a, &d, what) == 0, "%s: masters / moments differ", what);
    // checkpoints: the same bytes, and the ZeRO state comes back
    char dir_a[64], dir_b[64], sa[200], sb[200];
    test_mkdtemp(dir_a, sizeof(dir_a), "ddp_a");
    test_mkdtemp(dir_b, sizeof(dir_b), "ddp_b");
    const TrainRun run = {7, B, T, 1};
    const DataPosition pos = {1, 12};
    CHECK(checkpoint_save(&a, dir_a, 3, &run, pos, &err) == 0, "%s", err.msg);
    CHECK(ddp_checkpoint_save(&b, &d, dir_b, 3, &run, pos, &err) == 0, "%s", err.msg);
    const char* files[2] = {"train_state.bin", HF_SINGLE_NAME};
    for (int k = 0; k < 2; k++) {
        snprintf(sa, sizeof(sa), "%s/step_00000003/%s", dir_a, files[k]);
        snprintf(sb, sizeof(sb), "%s/step_00000003/%s", dir_b, files[k]);
        std::vector<char> fa = nccl_test_file(sa), fb = nccl_test_file(sb);
        CHECK(!fa.empty() && fa == fb, "%s: %s differs (%zu vs %zu bytes)", what, files[k], fa.size(), fb.size());
    }
    char latest[4200];
    CHECK(ckpt_latest_read(dir_b, latest, sizeof(latest), &err) == 0 && strstr(latest, "step_00000003"), "LATEST");
    GpuModel r;
    NcclCtx nc2;
    CHECK(nccl_init(&nc2, &li, NULL, &err) == 0, "%s", err.msg);
    gpu_model_create(&r, &c, policy);
    Ddp d2;
    ddp_create(&d2, &r, &nc2);
    gpu_model_init_random(&r, 99, 0);  // other values: the checkpoint must supply them all
    HfLoadReport rep;
    int step = 0;
    DataPosition got = {0, 0};
    CHECK(ddp_checkpoint_resume(&r, &d2, latest, &run, &rep, &step, &got, &err) == 0, "%s", err.msg);
    CHECK(step == 3 && r.adam_step == 3 && got.epoch == 1 && got.index == 12, "step %d adam %d pos %llu/%llu", step, r.adam_step,
          (unsigned long long)got.epoch, (unsigned long long)got.index);
    CHECK(nccl_test_same_device(a.params, r.params, sizeof(floatX) * a.table.total), "%s: resumed parameters differ", what);
    CHECK(nccl_test_state_equal(&a, &d2, "resumed") == 0, "%s: resumed masters / moments differ", what);
    const TrainRun other = {8, B, T, 1};
    CHECK(ddp_checkpoint_resume(&r, &d2, latest, &other, &rep, &step, &got, &err) != 0 && strstr(err.msg, "--seed"), "%s", err.msg);
    ddp_free(&d2);
    gpu_model_free(&r);
    test_rmtree(dir_a);
    test_rmtree(dir_b);
    ddp_free(&d);
    gpu_model_free(&a);
    gpu_model_free(&b);
}

GPU_TEST(gpu_ddp_one_rank_equals_one_gpu_update_all_trainable_clipped) { nccl_ddp_equals_one_gpu(TRAIN_ALL, 1e-3, "phase 0 (all trainable)"); }
GPU_TEST(gpu_ddp_one_rank_equals_one_gpu_update_attention_only) { nccl_ddp_equals_one_gpu(TRAIN_ATTENTION, 0.0, "phase 1 (attention)"); }

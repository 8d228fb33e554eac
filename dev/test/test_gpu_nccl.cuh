// test_gpu_nccl.cuh — llmc/nccl.cuh with one rank (the multi-GPU path on one GPU): the communicator
// starts from a single-process launch, and reduce-scatter, all-gather and all-reduce over one rank
// give back their input bit for bit (with one rank the NCCL path must equal the non-NCCL one).
#pragma once
#include "../../llmc/nccl.cuh"

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

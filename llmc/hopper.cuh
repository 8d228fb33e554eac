// hopper.cuh — the sm_90a primitives that the warp-specialized kernels share (the attention's
// producer/consumer kernels, the decode step's streamed gemv chain): shared-memory addresses,
// mbarriers (init, arrive, expected bytes, parity waits), register reallocation, named barriers and the
// 1-D bulk copy global -> shared that an mbarrier counts. Where the device is not sm_90a the wrappers
// compile to nothing (ca_bulk_load traps): the kernels that use them are launched only on sm_90.
#pragma once
#include <stdint.h>

__device__ __forceinline__ uint32_t ca_smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define CA_WS_DEVICE 1
#endif

// ---------------------------------------------------------------------------------------------
// mbarrier and register-reallocation wrappers (sm_90a; elsewhere the kernel traps, never launched)

__device__ __forceinline__ void ca_mbar_init(uint64_t* bar, unsigned count) {
#ifdef CA_WS_DEVICE
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(ca_smem_u32(bar)), "r"(count) : "memory");
#endif
}
// arrive (release at CTA scope: this thread's earlier writes are visible to whoever waits on the phase)
__device__ __forceinline__ void ca_mbar_arrive(uint64_t* bar) {
#ifdef CA_WS_DEVICE
    asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.release.cta.shared::cta.b64 state, [%0];\n}\n" ::"r"(ca_smem_u32(bar)) : "memory");
#endif
}
// wait (acquire) until the phase with this parity has completed
__device__ __forceinline__ void ca_mbar_wait(uint64_t* bar, unsigned parity) {
#ifdef CA_WS_DEVICE
    uint32_t done = 0;
    while (!done)
        asm volatile(
            "{\n .reg .pred p;\n mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(ca_smem_u32(bar)), "r"(parity)
            : "memory");
#endif
}
template <int N>
__device__ __forceinline__ void ca_setmaxnreg_dec() {
#ifdef CA_WS_DEVICE
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void ca_setmaxnreg_inc() {
#ifdef CA_WS_DEVICE
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

// one arrival, and `bytes` more to land before the phase may complete
__device__ __forceinline__ void ca_mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#ifdef CA_WS_DEVICE
    asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;\n" ::"r"(ca_smem_u32(bar)), "r"(bytes) : "memory");
#endif
}
// `bytes` more to land before the phase may complete, no arrival (the arrivals come separately)
__device__ __forceinline__ void ca_mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
#ifdef CA_WS_DEVICE
    asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(ca_smem_u32(bar)), "r"(bytes) : "memory");
#endif
}
// `bytes` (a multiple of 16; 16-byte aligned addresses) from global to shared memory by the copy engine,
// counted on bar as they land (the caller has announced them: ca_mbar_arrive_expect_tx)
__device__ __forceinline__ void ca_bulk_load(void* smem, const void* gmem, uint32_t bytes, uint64_t* bar) {
#ifdef CA_WS_DEVICE
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(ca_smem_u32(smem)),
                 "l"(gmem), "r"(bytes), "r"(ca_smem_u32(bar))
                 : "memory");
#else
    __trap();
#endif
}

// Shared memory that the generic proxy wrote (or read) -> ordered before the async proxy's accesses
// after the next barrier (the tensor cores' reads, a bulk copy's writes into a slot just read)
__device__ __forceinline__ void ca_fence_proxy_async() {
#ifdef CA_WS_DEVICE
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Named barriers (ids 1-15; 0 is __syncthreads'): sync waits until `threads` threads (a multiple of 32)
// have arrived at barrier id, arrive does not wait (the attention's consumers take turns on ids 1 and 2).
__device__ __forceinline__ void ca_named_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void ca_named_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}


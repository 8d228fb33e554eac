// checksum.h — a 64-bit checksum of a byte stream, for coda.c's own binary files (train_state.bin,
// bounded-state files): it tells a damaged or truncated file from a good one. Not cryptographic and
// not any standard algorithm's value; fast enough (four independent multiply-rotate lanes over
// 32-byte blocks, ~1 byte/cycle or better) to run over a 30 GB optimizer state as it streams.
// Each lane's step is a bijection of its 8-byte word and of the lane, so a damaged word changes its
// lane for good; the final mix spreads every lane over all 64 bits.
// Streaming: init, update with the bytes in any split, final; checksum_bytes does all three.
#pragma once
#include <stdint.h>
#include <string.h>

#define CHECKSUM_P1 0x9E3779B185EBCA87ull
#define CHECKSUM_P2 0xC2B2AE3D27D4EB4Full
#define CHECKSUM_P3 0x165667B19E3779F9ull

typedef struct {
    uint64_t lane[4];
    uint64_t total;      // bytes seen
    uint8_t pending[32]; // bytes of an incomplete block
    size_t n_pending;
} Checksum;

static inline uint64_t checksum__rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t checksum__load(const uint8_t* p) {  // little-endian on the hosts we run on
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}
static inline uint64_t checksum__round(uint64_t lane, uint64_t w) { return checksum__rotl(lane + w * CHECKSUM_P2, 31) * CHECKSUM_P1; }
static inline void checksum__block(Checksum* c, const uint8_t* p) {
    for (int i = 0; i < 4; i++) c->lane[i] = checksum__round(c->lane[i], checksum__load(p + 8 * i));
}

static inline void checksum_init(Checksum* c) {
    memset(c, 0, sizeof(*c));
    c->lane[0] = CHECKSUM_P1 + CHECKSUM_P2;
    c->lane[1] = CHECKSUM_P2;
    c->lane[2] = 0;
    c->lane[3] = 0 - CHECKSUM_P1;
}

static inline void checksum_update(Checksum* c, const void* data, size_t n) {
    const uint8_t* p = (const uint8_t*)data;
    c->total += n;
    if (c->n_pending) {
        size_t take = 32 - c->n_pending < n ? 32 - c->n_pending : n;
        memcpy(c->pending + c->n_pending, p, take);
        c->n_pending += take;
        p += take;
        n -= take;
        if (c->n_pending < 32) return;
        checksum__block(c, c->pending);
        c->n_pending = 0;
    }
    for (; n >= 32; p += 32, n -= 32) checksum__block(c, p);
    memcpy(c->pending, p, n);
    c->n_pending = n;
}

static inline uint64_t checksum_final(const Checksum* c) {
    uint64_t h = checksum__rotl(c->lane[0], 1) + checksum__rotl(c->lane[1], 7) + checksum__rotl(c->lane[2], 12) +
                 checksum__rotl(c->lane[3], 18);
    for (int i = 0; i < 4; i++) h = (h ^ checksum__round(0, c->lane[i])) * CHECKSUM_P1 + CHECKSUM_P3;
    h += c->total;
    size_t i = 0;
    for (; i + 8 <= c->n_pending; i += 8) h = checksum__rotl(h ^ checksum__round(0, checksum__load(c->pending + i)), 27) * CHECKSUM_P1 + CHECKSUM_P3;
    for (; i < c->n_pending; i++) h = checksum__rotl(h ^ (c->pending[i] * CHECKSUM_P3), 11) * CHECKSUM_P1;
    // final avalanche: every input bit reaches every output bit
    h ^= h >> 33;
    h *= CHECKSUM_P2;
    h ^= h >> 29;
    h *= CHECKSUM_P3;
    h ^= h >> 32;
    return h;
}

static inline uint64_t checksum_bytes(const void* data, size_t n) {
    Checksum c;
    checksum_init(&c);
    checksum_update(&c, data, n);
    return checksum_final(&c);
}

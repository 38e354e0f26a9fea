// What deduplication below the 64 KiB block would save on a night (issue 19, "night-1 bytes").
// Not part of any package and not what Cairn does: a measuring script against the system
// libzstd, run before building chunk dependencies into the format, to know what each lever buys.
//
//   cc -O2 -o /tmp/delta-sim Benchmarks/delta-sim.c -lzstd
//   /tmp/delta-sim OLD.raw NEW.raw [SAMPLE...]      e.g. base.raw night1.raw 1 8 32
//
// New blocks are NEW's non-zero 64 KiB blocks whose bytes no block of OLD has (what Cairn's
// night stores, before its index pages). They are taken in disk order, 32 to a frame, and each
// frame is compressed with Cairn's setup (level 2, hashLog 16, minMatch 5) three ways:
//   frames:    as Cairn stores them now;
//   previous:  with the previous versions of the frame's blocks (OLD at the same offsets) as a
//              zstd prefix, a reference a restore would have to read first;
//   sampled/S: previous versions plus every OLD block named by a sampled 4 KiB page
//              fingerprint: OLD's 4 KiB pages whose 64-bit hash has its high half 0 mod S
//              are indexed; each of the frame's 4 KiB pages is looked up, and a hit brings in
//              the block holding it and the block after it (a 4 KiB-aligned copy spans two
//              old blocks).
// It prints stored MiB for each and, for the sampled indexes, entries and base blocks used.
// The hash is not cryptographic: a simulation, never a store.
#define ZSTD_STATIC_LINKING_ONLY
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

enum { BLOCK = 65536, PAGE = 4096, PER_FRAME = 32, MAX_BASES = 1024 };

static uint64_t hash64(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        h = (h ^ v) * 1099511628211ULL;
        h ^= h >> 29;
    }
    return h | 1;  // 0 marks an empty slot
}

static int isZero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static const uint8_t *mapFile(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(path); exit(2); }
    *size = (size_t)st.st_size;
    void *p = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) { perror(path); exit(2); }
    return p;
}

/// Open addressing, key to value; sized by the caller for a load under one half.
typedef struct { uint64_t *keys; int64_t *values; size_t mask; size_t count; } Table;

static Table tableMake(size_t atLeast) {
    size_t capacity = 1024;
    while (capacity < atLeast * 2) capacity <<= 1;
    Table t = { calloc(capacity, 8), calloc(capacity, 8), capacity - 1, 0 };
    return t;
}

static void tablePut(Table *t, uint64_t key, int64_t value) {
    size_t i = key & t->mask;
    while (t->keys[i] && t->keys[i] != key) i = (i + 1) & t->mask;
    if (!t->keys[i]) t->count++;
    t->keys[i] = key;
    t->values[i] = value;
}

static int64_t tableGet(const Table *t, uint64_t key) {
    for (size_t i = key & t->mask; t->keys[i]; i = (i + 1) & t->mask)
        if (t->keys[i] == key) return t->values[i];
    return -1;
}

static ZSTD_CCtx *cctx;
static uint8_t *compressed;
static size_t compressedCapacity;

static size_t compress(const uint8_t *src, size_t n, const uint8_t *prefix, size_t prefixLength) {
    int windowLog = 21;
    while (((size_t)1 << windowLog) < prefixLength + n) windowLog++;
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 2);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, windowLog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, 16);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, 5);
    if (prefixLength) ZSTD_CCtx_refPrefix(cctx, prefix, prefixLength);
    size_t r = ZSTD_compress2(cctx, compressed, compressedCapacity, src, n);
    if (ZSTD_isError(r)) { fprintf(stderr, "zstd: %s\n", ZSTD_getErrorName(r)); exit(1); }
    return r < n ? r : n;  // a frame that does not shrink is stored as is
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s OLD NEW [SAMPLE...]\n", argv[0]); return 2; }
    size_t oldSize, newSize;
    const uint8_t *old = mapFile(argv[1], &oldSize), *new = mapFile(argv[2], &newSize);
    size_t oldBlocks = oldSize / BLOCK, newBlocks = newSize / BLOCK;

    Table known = tableMake(oldBlocks);
    for (size_t b = 0; b < oldBlocks; b++)
        if (!isZero(old + b * BLOCK, BLOCK)) tablePut(&known, hash64(old + b * BLOCK, BLOCK), (int64_t)b);
    size_t *fresh = malloc(newBlocks * sizeof *fresh), freshCount = 0;
    for (size_t b = 0; b < newBlocks; b++) {
        const uint8_t *p = new + b * BLOCK;
        if (b < oldBlocks && memcmp(p, old + b * BLOCK, BLOCK) == 0) continue;
        if (isZero(p, BLOCK) || tableGet(&known, hash64(p, BLOCK)) >= 0) continue;
        fresh[freshCount++] = b;
    }
    printf("new blocks: %zu (%.2f MiB plain)\n", freshCount, freshCount * (double)BLOCK / (1 << 20));

    cctx = ZSTD_createCCtx();
    compressedCapacity = ZSTD_compressBound(PER_FRAME * BLOCK);
    compressed = malloc(compressedCapacity);
    uint8_t *frame = malloc(PER_FRAME * BLOCK);
    uint8_t *prefix = malloc((size_t)(PER_FRAME + MAX_BASES) * BLOCK);

    size_t plainStored = 0, previousStored = 0;
    for (size_t f = 0; f < freshCount; f += PER_FRAME) {
        size_t k = freshCount - f < PER_FRAME ? freshCount - f : PER_FRAME, prefixLength = 0;
        for (size_t j = 0; j < k; j++) {
            memcpy(frame + j * BLOCK, new + fresh[f + j] * BLOCK, BLOCK);
            if (fresh[f + j] < oldBlocks) {
                memcpy(prefix + prefixLength, old + fresh[f + j] * BLOCK, BLOCK);
                prefixLength += BLOCK;
            }
        }
        plainStored += compress(frame, k * BLOCK, NULL, 0);
        previousStored += compress(frame, k * BLOCK, prefix, prefixLength);
    }
    printf("frames:        %8.2f MiB\n", plainStored / 1048576.0);
    printf("previous:      %8.2f MiB\n", previousStored / 1048576.0);

    for (int a = 3; a < argc; a++) {
        uint64_t sample = (uint64_t)atoll(argv[a]);
        if (sample < 1) sample = 1;
        Table pages = tableMake(oldSize / PAGE / sample + 1);
        for (size_t off = 0; off + PAGE <= oldBlocks * BLOCK; off += PAGE) {
            if (isZero(old + off, PAGE)) continue;
            uint64_t h = hash64(old + off, PAGE);
            if ((h >> 32) % sample == 0) tablePut(&pages, h, (int64_t)(off / BLOCK));
        }
        size_t stored = 0, basesUsed = 0;
        for (size_t f = 0; f < freshCount; f += PER_FRAME) {
            size_t k = freshCount - f < PER_FRAME ? freshCount - f : PER_FRAME, prefixLength = 0;
            int64_t bases[MAX_BASES];
            size_t baseCount = 0;
            for (size_t j = 0; j < k; j++) {
                memcpy(frame + j * BLOCK, new + fresh[f + j] * BLOCK, BLOCK);
                if (fresh[f + j] < oldBlocks) bases[baseCount++] = (int64_t)fresh[f + j];
            }
            for (size_t j = 0; j < k; j++)
                for (size_t o = 0; o < BLOCK; o += PAGE) {
                    int64_t hit = tableGet(&pages, hash64(frame + j * BLOCK + o, PAGE));
                    for (int64_t b = hit; hit >= 0 && b <= hit + 1 && b < (int64_t)oldBlocks; b++) {
                        int seen = 0;
                        for (size_t s = 0; s < baseCount && !seen; s++) seen = bases[s] == b;
                        if (!seen && baseCount < MAX_BASES) bases[baseCount++] = b;
                    }
                }
            for (size_t s = 0; s < baseCount; s++) {
                memcpy(prefix + prefixLength, old + (size_t)bases[s] * BLOCK, BLOCK);
                prefixLength += BLOCK;
            }
            basesUsed += baseCount;
            stored += compress(frame, k * BLOCK, prefix, prefixLength);
        }
        printf("sampled 1/%-4llu %8.2f MiB (%zu fingerprints, %zu base blocks referenced)\n",
               (unsigned long long)sample, stored / 1048576.0, pages.count, basesUsed);
        free(pages.keys);
        free(pages.values);
    }
    return 0;
}

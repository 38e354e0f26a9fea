// zstd parameter sets measured on a disk's own frames (issue 19; docs/ARCHITECTURE.md,
// "Compression level"). Not part of any package: a measuring script against the system libzstd.
//
//   cc -O2 -o /tmp/zstd-sweep Benchmarks/zstd-sweep.c -lzstd
//   /tmp/zstd-sweep DISK SAMPLE_MIB PASSES SET [SET...]
//   SET = comma-separated name=value: level windowLog hashLog chainLog searchLog minMatch
//         targetLength strategy (1 fast, 2 dfast, 3 greedy) ldm literals (0 auto, 1 huffman,
//         2 uncompressed) rowMatch
//   PROBE=1 /tmp/zstd-sweep ...   runs Cairn's incompressibility probe before each frame
//   (PROBE_ALL=1 as well: the probe before it stopped early, all 8 pieces)
//
// Samples frames as cairn-limits does: up to SAMPLE_MIB of DISK's aligned 2 MiB windows that lie
// inside allocated extents, spread evenly, each window's non-zero 64 KiB blocks gathered into one
// frame (what a night-0 backup compresses, before deduplication). A SAMPLE_MIB larger than the
// disk takes every window. For each set: the stored bytes (a frame that does not shrink counts
// its plain bytes), the CPU time of the compression per pass (min and median), and, since the
// machine is shared, the median and quartiles over passes of the first set's time over this
// set's in the same pass (speed relative to the first set, measured seconds apart).
// `compress_all` is a function of its own so that callgrind can count only it:
//   valgrind --tool=callgrind --collect-atstart=no --toggle-collect=compress_all --cache-sim=yes
//     --D1=32768,8,64 --LL=524288,8,64 /tmp/zstd-sweep DISK 32 1 SET
#define _GNU_SOURCE
#define ZSTD_STATIC_LINKING_ONLY
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

enum { WINDOW = 2 << 20, BLOCK = 65536 };

static unsigned char *plain;
static size_t *plainLength;
static int frameCount;
static unsigned char out[WINDOW + (WINDOW >> 7) + 1024];

static double cpuSeconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static const struct { const char *name; int param; } names[] = {
    {"level", ZSTD_c_compressionLevel}, {"windowLog", ZSTD_c_windowLog},
    {"hashLog", ZSTD_c_hashLog}, {"chainLog", ZSTD_c_chainLog},
    {"searchLog", ZSTD_c_searchLog}, {"minMatch", ZSTD_c_minMatch},
    {"targetLength", ZSTD_c_targetLength}, {"strategy", ZSTD_c_strategy},
    {"ldm", ZSTD_c_enableLongDistanceMatching}, {"literals", ZSTD_c_literalCompressionMode},
    {"rowMatch", ZSTD_c_useRowMatchFinder}, {0, 0}};

static ZSTD_CCtx *makeContext(const char *set) {
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0);
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
    char *copy = strdup(set), *save, *item;
    for (item = strtok_r(copy, ",", &save); item; item = strtok_r(0, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) { fprintf(stderr, "zstd-sweep: %s is not name=value\n", item); exit(2); }
        *eq = 0;
        int i = 0;
        while (names[i].name && strcmp(names[i].name, item)) i++;
        if (!names[i].name) { fprintf(stderr, "zstd-sweep: unknown parameter %s\n", item); exit(2); }
        size_t rc = ZSTD_CCtx_setParameter(c, names[i].param, atoi(eq + 1));
        if (ZSTD_isError(rc)) { fprintf(stderr, "zstd-sweep: %s=%s: %s\n", item, eq + 1, ZSTD_getErrorName(rc)); exit(2); }
    }
    free(copy);
    return c;
}

// Cairn's probe (ZstdCompressor.worthCompressing): 8 pieces of 4 KiB at level 1, spread evenly;
// worth compressing unless together they shrink by less than 3%; it stops as soon as the verdict
// is known (pieces still to come could not reach the threshold even if none shrank).
static ZSTD_CCtx *probeContext;
static int probeRejected;
static int worthCompressing(const unsigned char *source, size_t n) {
    static unsigned char scratch[4174];  // ZSTD_compressBound(4096), as Cairn allocates
    if (n < (256 << 10)) return 1;
    if (!probeContext) {
        probeContext = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(probeContext, ZSTD_c_compressionLevel, 1);
    }
    size_t stride = (n - 4096) / 7, compressed = 0;
    for (int i = 0; i < 8; i++) {
        size_t k = ZSTD_compress2(probeContext, scratch, sizeof scratch, source + i * stride, 4096);
        if (ZSTD_isError(k)) return 1;
        compressed += k;
        if (compressed + (7 - i) * sizeof scratch < 0.97 * 8 * 4096 && !getenv("PROBE_ALL")) return 1;
    }
    return compressed < 0.97 * 8 * 4096;
}

__attribute__((noinline)) size_t compress_all(ZSTD_CCtx *c, int probe) {
    size_t stored = 0;
    unsigned char *p = plain;
    probeRejected = 0;
    for (int r = 0; r < frameCount; p += plainLength[r], r++) {
        if (probe && !worthCompressing(p, plainLength[r])) {
            probeRejected++;
            stored += plainLength[r];
            continue;
        }
        size_t n = ZSTD_compress2(c, out, plainLength[r] - 1, p, plainLength[r]);
        stored += ZSTD_isError(n) ? plainLength[r] : n;
    }
    return stored;
}

static int compareDoubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: zstd-sweep DISK SAMPLE_MIB PASSES SET [SET...]\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 2; }
    struct stat st;
    fstat(fd, &st);
    long size = st.st_size, sample = atol(argv[2]) << 20;
    int passes = atoi(argv[3]), probe = getenv("PROBE") != 0;

    long *windows = malloc(sizeof(long) * (size / WINDOW + 1));
    int windowCount = 0;
    for (long at = 0; at < size;) {
        off_t data = lseek(fd, at, SEEK_DATA);
        if (data < 0) break;
        off_t hole = lseek(fd, data, SEEK_HOLE);
        long end = hole < 0 ? size : hole;
        for (long s = (data + WINDOW - 1) / WINDOW * (long)WINDOW; s + WINDOW <= end; s += WINDOW)
            windows[windowCount++] = s;
        at = end;
    }
    int wanted = sample / WINDOW;
    if (wanted > windowCount) wanted = windowCount;
    if (wanted < 1) { fprintf(stderr, "zstd-sweep: no aligned 2 MiB window of data\n"); return 2; }
    double stride = (double)windowCount / wanted;
    plain = malloc((size_t)wanted * WINDOW);
    plainLength = calloc(wanted, sizeof(size_t));
    unsigned char *window = malloc(WINDOW);
    size_t total = 0;
    for (int i = 0; i < wanted; i++) {
        if (pread(fd, window, WINDOW, windows[(int)(i * stride)]) != WINDOW) { perror("pread"); return 2; }
        size_t n = 0;
        for (int b = 0; b < WINDOW / BLOCK; b++) {
            unsigned char *block = window + b * BLOCK;
            int zero = 1;
            for (int k = 0; k < BLOCK && zero; k++) zero = block[k] == 0;
            if (zero) continue;
            memcpy(plain + total + n, block, BLOCK);
            n += BLOCK;
        }
        if (n) { plainLength[frameCount++] = n; total += n; }
    }

    int sets = argc - 4;
    ZSTD_CCtx **contexts = malloc(sizeof(void *) * sets);
    size_t *stored = calloc(sets, sizeof(size_t));
    double *seconds = malloc(sizeof(double) * sets * passes), *speed = malloc(sizeof(double) * sets * passes);
    for (int i = 0; i < sets; i++) contexts[i] = makeContext(argv[4 + i]);
    for (int p = 0; p < passes; p++)
        for (int i = 0; i < sets; i++) {
            double t0 = cpuSeconds();
            stored[i] = compress_all(contexts[i], probe);
            seconds[i * passes + p] = cpuSeconds() - t0;
        }
    printf("# %zu plain bytes in %d frames%s\n", total, frameCount, probe ? ", probed" : "");
    for (int i = 0; i < sets; i++) {
        double *t = seconds + i * passes, *s = speed + i * passes;
        for (int p = 0; p < passes; p++) s[p] = seconds[p] / t[p];
        qsort(s, passes, sizeof(double), compareDoubles);
        qsort(t, passes, sizeof(double), compareDoubles);
        printf("%-64s stored %10zu ratio %.4f  min %6.1f med %6.1f MB/s  vs first %.3f [%.3f-%.3f]\n", argv[4 + i],
               stored[i], (double)stored[i] / total, total / t[0] / 1e6, total / t[passes / 2] / 1e6, s[passes / 2],
               s[passes / 4], s[3 * passes / 4]);
    }
    if (probe) printf("# probe: %d frames stored as they are\n", probeRejected);
    return 0;
}

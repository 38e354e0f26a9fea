// Linux calls that glibc declares only under _GNU_SOURCE.
#include <sys/types.h>

extern int syncfs(int fd);

static inline int cairn_syncfs(int fd) { return syncfs(fd); }

extern int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags);

/// SYNC_FILE_RANGE_WRITE over the whole file: start writeback now, do not wait for it.
static inline int cairn_start_writeback(int fd) { return sync_file_range(fd, 0, 0, 2); }

#include <malloc.h>

/// Allocations of at least `bytes` get a mapping of their own, returned to the system when freed.
static inline int cairn_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

#include <fcntl.h>

/// Opens an existing file for writes that bypass the page cache (O_DIRECT, which glibc names only
/// under _GNU_SOURCE; __O_DIRECT is its per-architecture value). -1 with errno on failure.
static inline int cairn_open_direct_write(const char *path) {
    return open(path, O_WRONLY | __O_DIRECT | O_CLOEXEC);
}

/// Opens an existing file for reads that bypass the page cache (O_DIRECT). -1 with errno on failure.
static inline int cairn_open_direct_read(const char *path) {
    return open(path, O_RDONLY | __O_DIRECT | O_CLOEXEC);
}

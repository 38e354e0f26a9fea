// Linux calls that glibc declares only under _GNU_SOURCE.
#include <sys/types.h>

extern int syncfs(int fd);
extern int fallocate(int fd, int mode, off_t offset, off_t len);

static inline int cairn_syncfs(int fd) { return syncfs(fd); }

/// FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
static inline int cairn_punch_hole(int fd, off_t offset, off_t length) { return fallocate(fd, 0x01 | 0x02, offset, length); }

extern int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags);

/// SYNC_FILE_RANGE_WRITE over the whole file: start writeback now, do not wait for it.
static inline int cairn_start_writeback(int fd) { return sync_file_range(fd, 0, 0, 2); }

/* An evader's credential read: opens and reads a file with io_uring (IORING_OP_OPENAT and
 * IORING_OP_READ), never calling open(2) or openat(2), hoping the agent only watches the
 * open syscalls.
 *
 * usage: uring_read PATH     prints the number of bytes read
 */
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>

#include "uring.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: uring_read PATH\n");
        return 2;
    }
    struct io_uring ring;
    int err = io_uring_queue_init(4, &ring, 0);
    if (err < 0) {
        fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-err));
        return 1;
    }
    io_uring_prep_openat(io_uring_get_sqe(&ring), AT_FDCWD, argv[1], O_RDONLY, 0);
    int fd = complete(&ring);
    if (fd < 0) {
        fprintf(stderr, "openat through io_uring: %s\n", strerror(-fd));
        return 1;
    }
    char buf[4096];
    io_uring_prep_read(io_uring_get_sqe(&ring), fd, buf, sizeof buf, 0);
    int n = complete(&ring);
    if (n < 0) {
        fprintf(stderr, "read through io_uring: %s\n", strerror(-n));
        return 1;
    }
    printf("%d\n", n);
    io_uring_queue_exit(&ring);
    return 0;
}

/* What the io_uring test clients share: submitting the one queued request and waiting
 * for its completion. */
#ifndef SIGIL_TEST_URING_H
#define SIGIL_TEST_URING_H

#include <liburing.h>

/* The queued request's result (a negative errno on failure). */
static int complete(struct io_uring *ring) {
    struct io_uring_cqe *cqe;
    int err = io_uring_submit_and_wait(ring, 1);
    if (err < 0)
        return err;
    err = io_uring_wait_cqe(ring, &cqe);
    if (err < 0)
        return err;
    int res = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    return res;
}

#endif

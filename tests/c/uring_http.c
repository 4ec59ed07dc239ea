/* An evader's plain-HTTP client: it connects and sends its bearer token through io_uring
 * (IORING_OP_CONNECT, then IORING_OP_SEND, WRITEV or SENDMSG), never calling connect(2),
 * write(2), sendto(2), writev(2) or sendmsg(2), hoping the agent only watches those
 * syscalls. The response is read with read(2). slot-close: the socket is made on fd 0 and
 * the request written with write(2), after an io_uring close of a registered file slot
 * (which the kernel describes with fd 0), hoping the agent forgets fd 0 then.
 *
 * usage: uring_http PORT MOVE PATH TOKEN [FILE]     (MOVE: send, writev, sendmsg or slot-close)
 * Prints the response's status code. With FILE, the socket is then closed through
 * io_uring (IORING_OP_CLOSE) and FILE opened, taking the socket's fd number, and written
 * with write(2): a request with a token, which is a file's content and no credential use.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "uring.h"

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: uring_http PORT MOVE PATH TOKEN [FILE]\n");
        return 2;
    }
    const char *move = argv[2];
    struct io_uring ring;
    int err = io_uring_queue_init(4, &ring, 0);
    if (err < 0) {
        fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-err));
        return 1;
    }
    int slot_close = strcmp(move, "slot-close") == 0;
    if (slot_close)
        close(0); /* the socket takes fd 0 */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    io_uring_prep_connect(io_uring_get_sqe(&ring), s, (struct sockaddr *)&addr, sizeof addr);
    if ((err = complete(&ring)) < 0) {
        fprintf(stderr, "connect through io_uring: %s\n", strerror(-err));
        return 1;
    }
    char head[512], auth[512];
    snprintf(head, sizeof head, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", argv[3]);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\nConnection: close\r\n\r\n", argv[4]);
    struct iovec iov[2] = {{head, strlen(head)}, {auth, strlen(auth)}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    char whole[1024];
    snprintf(whole, sizeof whole, "%s%s", head, auth);
    if (slot_close) {
        /* A close of registered file slot 0, which the kernel describes with fd 0, then
         * the request written to the socket on fd 0 with write(2). */
        int pipe_fds[2];
        if (s != 0 || pipe(pipe_fds) < 0 || io_uring_register_files(&ring, pipe_fds, 1) < 0) {
            fprintf(stderr, "staging the slot close (socket on fd %d)\n", s);
            return 1;
        }
        io_uring_prep_close_direct(io_uring_get_sqe(&ring), 0);
        if ((err = complete(&ring)) < 0) {
            fprintf(stderr, "close of a registered slot: %s\n", strerror(-err));
            return 1;
        }
        if (write(s, whole, strlen(whole)) < 0) {
            perror("write");
            return 1;
        }
    } else if (strcmp(move, "send") == 0)
        io_uring_prep_send(io_uring_get_sqe(&ring), s, whole, strlen(whole), 0);
    else if (strcmp(move, "writev") == 0)
        io_uring_prep_writev(io_uring_get_sqe(&ring), s, iov, 2, 0);
    else if (strcmp(move, "sendmsg") == 0)
        io_uring_prep_sendmsg(io_uring_get_sqe(&ring), s, &msg, 0);
    else {
        fprintf(stderr, "unknown move %s\n", move);
        return 2;
    }
    if (!slot_close && (err = complete(&ring)) < 0) {
        fprintf(stderr, "%s through io_uring: %s\n", move, strerror(-err));
        return 1;
    }
    char response[4096];
    ssize_t n = read(s, response, sizeof response - 1);
    if (n < 12) {
        fprintf(stderr, "no response\n");
        return 1;
    }
    response[n] = 0;
    printf("%.3s\n", response + 9);
    if (argc == 6) {
        io_uring_prep_close(io_uring_get_sqe(&ring), s);
        if ((err = complete(&ring)) < 0) {
            fprintf(stderr, "close through io_uring: %s\n", strerror(-err));
            return 1;
        }
        int f = open(argv[5], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (f != s) {
            fprintf(stderr, "the file got fd %d, not the socket's %d\n", f, s);
            return 1;
        }
        char later[1024];
        snprintf(later, sizeof later, "GET /in-a-file HTTP/1.1\r\nAuthorization: Bearer %s-file\r\n\r\n", argv[4]);
        if (write(f, later, strlen(later)) < 0) {
            perror("write");
            return 1;
        }
        close(f);
    }
    io_uring_queue_exit(&ring);
    return 0;
}

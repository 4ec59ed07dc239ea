"""Puts N threads inside SSL_write at once, and keeps them there.

A TLS server in this process completes each handshake and then reads nothing; both ends
have tiny socket buffers, so each client thread's large write blocks in the kernel while
OpenSSL's SSL_write is on its stack. Prints BLOCKED once every thread is inside its write.
Then, on a line "release" on stdin, the server drains every connection so all writes
return, and DONE is printed; on EOF the process just waits to be killed (the threads die
inside SSL_write).

usage: tls_blockers.py N CERT KEY
"""
import socket
import ssl
import sys
import threading
import time

PAYLOAD = b"x" * (1 << 20)


def main() -> None:
    n, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    threading.stack_size(256 << 10)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(n)
    port = listener.getsockname()[1]
    accepted = []

    def serve() -> None:
        for _ in range(n):
            raw, _ = listener.accept()
            accepted.append(server_ctx.wrap_socket(raw, server_side=True))

    server = threading.Thread(target=serve, daemon=True)
    server.start()

    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    entered = threading.Semaphore(0)
    finished = []

    def write() -> None:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        raw.connect(("127.0.0.1", port))
        s = client_ctx.wrap_socket(raw)
        entered.release()
        s.sendall(PAYLOAD)
        finished.append(1)
        s.close()

    writers = [threading.Thread(target=write, daemon=True) for _ in range(n)]
    for w in writers:
        w.start()
    for _ in range(n):
        entered.acquire()
    server.join()
    # Each write fills a few KiB of buffers and then has to wait for the server.
    time.sleep(1.0)
    if finished:
        raise SystemExit(f"{len(finished)} writes completed without the server reading")
    print("BLOCKED", flush=True)

    if sys.stdin.readline().strip() != "release":
        while True:
            time.sleep(3600)

    def drain(conn: ssl.SSLSocket) -> None:
        while conn.recv(1 << 16):
            pass

    drains = [threading.Thread(target=drain, args=(c,), daemon=True) for c in accepted]
    for d in drains:
        d.start()
    for w in writers:
        w.join()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()

"""Sends HTTP requests over one TLS connection in awkward write patterns.

1. A GET whose head is split over three writes (three SSL_write calls).
2. A POST with a 1 MiB body.
3. A GET after that body, on the same keep-alive connection.
Each request carries its own bearer token (argv). Reads each response fully.

usage: tls_writer.py PORT SPLIT_TOKEN BIG_TOKEN NEXT_TOKEN
"""
import socket
import ssl
import sys

from http_response import read_response


def main() -> None:
    port, split_token, big_token, next_token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", int(port))) as raw, ctx.wrap_socket(raw) as s:
        s.sendall(b"GET /split HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        s.sendall(b"Authorization: Bearer " + split_token.encode())
        s.sendall(b"\r\nAccept: */*\r\n\r\n")
        read_response(s)

        body = b"x" * (1 << 20)
        s.sendall(
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + big_token.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        s.sendall(body)
        read_response(s)

        s.sendall(b"GET /after-body HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + next_token.encode() + b"\r\n\r\n")
        read_response(s)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()

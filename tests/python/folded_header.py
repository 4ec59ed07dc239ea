"""Sends one HTTP/1.1 request over TLS whose head carries an obsolete folded header
(RFC 9112 section 5.2: a continuation line starting with whitespace) before a valid
Authorization header, then a malformed header line, on one real socket. Reads the
response (if the server answers at all) and prints "SENT".

usage: folded_header.py PORT TOKEN
"""
import socket
import ssl
import sys


def main() -> None:
    port, token = int(sys.argv[1]), sys.argv[2]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    head = (
        b"GET /folded HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"X-Legacy-Note: first part\r\n"
        b"\tcontinued on a folded line\r\n"
        b"this line has no colon\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as s:
        s.settimeout(5)
        s.sendall(head)
        try:
            while s.recv(65536):
                pass
        except (socket.timeout, ssl.SSLError, ConnectionError):
            pass
    print("SENT", flush=True)


if __name__ == "__main__":
    main()

"""An evader's TLS client: it opens its connection with a write that a server accepts
but that is not a request with a known method, then sends a bearer token on the same
connection, hoping the agent stopped watching it after the first write.

  blank-line      an empty line, in a write of its own, before the request
                  (RFC 9112 section 2.2: servers such as nginx and Node's skip it)
  unknown-method  a whole request with a made-up method first (RFC 9110 section 9.1:
                  Go's net/http answers it and keeps the connection)

usage: tls_first_write.py MOVE PORT TOKEN
Prints the status of every response, then "DONE".
"""
import socket
import ssl
import sys
import time

from http_response import read_response


def main() -> None:
    move, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    statuses = []
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as s:
        if move == "blank-line":
            s.sendall(b"\r\n")
            # No answer comes to an empty line: give the agent time to act on it.
            time.sleep(1)
        elif move == "unknown-method":
            s.sendall(b"XYZ /first HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            statuses.append(read_response(s))
        else:
            raise SystemExit(f"unknown move {move}")
        s.sendall(b"GET /after-" + move.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n")
        statuses.append(read_response(s))
    print(*statuses, "DONE", flush=True)


if __name__ == "__main__":
    main()

"""Sends HTTP/1.1 requests over plain TCP with gathered writes, the way many clients and
servers do: the request head split across iovecs.

1. socket.sendmsg([...]) (the sendmsg syscall), a GET with an x-api-key header.
2. os.writev(fd, [...]) (the writev syscall), a POST with a bearer token and a body.
Reads each response fully; prints DONE.

usage: iov_client.py PORT SENDMSG_KEY WRITEV_TOKEN
"""
import os
import socket
import sys

from http_response import read_response


def main() -> None:
    port, sendmsg_key, writev_token = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendmsg([
            b"GET /via-sendmsg HTTP/1.1\r\n",
            b"Host: 127.0.0.1\r\n",
            b"x-api-key: " + sendmsg_key + b"\r\n",
            b"\r\n",
        ])
        read_response(s)
    with socket.create_connection(("127.0.0.1", port)) as s:
        body = b'{"q":1}'
        sent = os.writev(s.fileno(), [
            b"POST /via-writev HTTP/1.1\r\nHost: 127.0.0.1\r\n",
            b"Authorization: Bearer " + writev_token + b"\r\n",
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n",
            body,
        ])
        assert sent > 0
        read_response(s)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()

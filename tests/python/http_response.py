"""Reading one HTTP/1.1 response off a socket (plain or TLS), shared by the test clients."""
import socket


def read_response(s: socket.socket) -> int:
    """Reads the head and a Content-Length body, and returns the status code; fails if
    the peer closes first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed before the response")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += s.recv(65536)
    return int(head.split(b" ")[1])

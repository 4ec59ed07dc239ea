"""A small HTTP/1.1 server (keep-alive, bodies read by Content-Length), with TLS when a
certificate is given. Prints "READY <port>" once listening.

usage: http_server.py PORT [CERT KEY]   (PORT 0: a free port, the one printed)
"""
import http.server
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle + delayed ACK
    # stall every keep-alive response by ~40 ms.
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


def serve(port: int, handler, cert=None, key=None) -> None:
    """Serves `handler` on loopback `port` (TLS when `cert` and `key` are given); prints
    READY and the port once listening. Port 0 lets the kernel pick one while binding, so
    no other socket can take it between a choice and the bind. token_server.py serves
    its own handler through this too."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


def main() -> None:
    cert, key = (sys.argv[2], sys.argv[3]) if len(sys.argv) == 4 else (None, None)
    serve(int(sys.argv[1]), Handler, cert, key)


if __name__ == "__main__":
    main()

"""A TLS request loop over one keep-alive connection, with a bearer token on every
request: the hot path of credential-use tracing (SSL_write uprobes, socket tracepoints,
request parsing). Prints requests per second.

usage: tls_loop.py PORT REQUESTS [TOKEN [HOLD_SECONDS]]
"""
import http.client
import ssl
import sys
import time


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    token = sys.argv[3] if len(sys.argv) > 3 else "ghp_BENCHMARKtoken000000000000000000000000"
    headers = {"Authorization": f"Bearer {token}"}
    start = time.perf_counter()
    for i in range(n):
        conn.request("GET", f"/bench/{i}", headers=headers)
        conn.getresponse().read()
    elapsed = time.perf_counter() - start
    print(f"{n / elapsed:.1f}", flush=True)
    if len(sys.argv) > 4:  # stay alive (connection open) so a test can stop the agent first
        time.sleep(float(sys.argv[4]))


if __name__ == "__main__":
    main()

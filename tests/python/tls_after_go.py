"""Loads Python's ssl (and so libssl) first, waits for "go" on stdin, then sends one
HTTPS request with a bearer token. Lets a test see a TLS library attached while the
process runs, before the process uses it.

usage: tls_after_go.py PORT TOKEN
"""
import http.client
import ssl
import sys


def main() -> None:
    port, token = int(sys.argv[1]), sys.argv[2]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    print("READY", flush=True)
    sys.stdin.readline()
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    conn.request("GET", "/late-library", headers={"Authorization": f"Bearer {token}"})
    conn.getresponse().read()
    print("DONE", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()

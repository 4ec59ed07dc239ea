"""An evader's plain-HTTP client: it opens its connection with a PROXY protocol version 2
header (binary, with a TLV after the addresses) to a server that accepts one, then sends
a bearer token, hoping the agent took the binary header for a protocol that is not HTTP
and stopped watching the connection.

usage: proxy_v2_client.py PORT PATH TOKEN
Prints the whole response (the server closes the connection after it).
"""
import socket
import struct
import sys


def main() -> None:
    port, path, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    # TCP over IPv4 from 10.9.8.7:51000 to 10.0.0.2:80, then a NOOP TLV of 5 bytes.
    addresses = bytes([10, 9, 8, 7, 10, 0, 0, 2]) + struct.pack("!HH", 51000, 80)
    tlv = bytes([0x04]) + struct.pack("!H", 5) + b"sigil"
    header = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses) + len(tlv)) + addresses + tlv
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(header)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := s.recv(65536):
            response += chunk
        print(response.decode(errors="replace").strip(), flush=True)


if __name__ == "__main__":
    main()

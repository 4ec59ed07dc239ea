"""Workload API connections handled the way an attacker would: kept across fork and
exec, handed to another process with SCM_RIGHTS, or fed raw bytes.

The HTTP/2 request bytes are built by the Rust test (hex on the command line or stdin);
this script only moves them and prints what the agent answered, as hex, for the test
to decode.

  fetch SOCKET REQ_HEX                   connect, ask, print the answer
  fetch-on-line SOCKET REQ_HEX           the same, once a line arrives on stdin
  exec-after-connect SOCKET REQ_HEX PROG [ARGS...]
                                         connect and finish the HTTP/2 handshake (the
                                         agent has accepted), fork; the parent execs
                                         PROG, the child asks once PROG runs
  send-fd SOCKET HANDOFF stay|exit       connect and handshake, send the connection to
                                         the receiver on HANDOFF, then stay (until stdin
                                         closes) or exit
  recv-fd HANDOFF REQ_HEX                receive a connection on HANDOFF, wait for a line
                                         on stdin, ask over it, print the answer
  raw SOCKET                             send the bytes read (hex) from stdin, print what
                                         came back, then "closed" (by the agent) or
                                         "quiet" (nothing for 5 s)
  flood SOCKET N                         open N connections and send nothing; print
                                         "OPEN <connected>", then on a line from stdin
                                         "CLOSED <closed by the agent>", then hold the
                                         rest until stdin closes
"""

import os
import resource
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
TIMEOUT = 20


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def frames(s):
    """Yields (raw frame, type, flags, stream) until EOF."""
    while True:
        head = read_exact(s, 9)
        if head is None:
            return
        length = int.from_bytes(head[:3], "big")
        body = read_exact(s, length) if length else b""
        if body is None:
            return
        yield head + body, head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF


def handshake(s):
    """Sends the client preface and waits for the server's SETTINGS: the agent accepted."""
    s.sendall(PREFACE + SETTINGS)
    for _, kind, flags, _ in frames(s):
        if kind == 0x4 and not flags & 0x1:
            return
    sys.exit("the agent closed the connection during the handshake")


def ask(s, request, handshaken):
    """Sends a request (after the preface unless `handshaken`); returns every byte the
    agent sent until stream 1 ended, the connection was closed or went away."""
    s.sendall(request if handshaken else PREFACE + SETTINGS + request)
    out = b""
    for raw, kind, flags, stream in frames(s):
        out += raw
        if kind == 0x7 or (stream == 1 and flags & 0x1 and kind in (0x0, 0x1)) or (kind == 0x3 and stream == 1):
            break
    return out


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(path)
    return s


def emit(data):
    sys.stdout.write(data.hex() + "\n")
    sys.stdout.flush()


def main():
    mode = sys.argv[1]
    if mode in ("fetch", "fetch-on-line"):
        if mode == "fetch-on-line":
            sys.stdin.readline()
        emit(ask(connect(sys.argv[2]), bytes.fromhex(sys.argv[3]), False))
    elif mode == "exec-after-connect":
        sock, request, prog = sys.argv[2], bytes.fromhex(sys.argv[3]), sys.argv[4]
        s = connect(sock)
        handshake(s)
        if os.fork() == 0:
            parent, want = os.getppid(), os.path.realpath(prog)
            deadline = time.time() + TIMEOUT
            while os.path.realpath(f"/proc/{parent}/exe") != want:
                if time.time() > deadline:
                    os._exit(3)
                time.sleep(0.01)
            emit(ask(s, request, True))
            os._exit(0)
        # Python sockets are close-on-exec: after this only the child holds the connection.
        os.execv(prog, [prog] + sys.argv[5:])
    elif mode == "send-fd":
        s = connect(sys.argv[2])
        handshake(s)
        h = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        h.connect(sys.argv[3])
        socket.send_fds(h, [b"x"], [s.fileno()])
        h.close()
        s.close()
        print("SENT", flush=True)
        if sys.argv[4] == "stay":
            sys.stdin.read()
    elif mode == "recv-fd":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(sys.argv[2])
        listener.listen(1)
        print("LISTENING", flush=True)
        h, _ = listener.accept()
        _, fds, _, _ = socket.recv_fds(h, 1, 1)
        s = socket.socket(fileno=fds[0])
        s.settimeout(TIMEOUT)
        print("RECEIVED", flush=True)
        sys.stdin.readline()
        emit(ask(s, bytes.fromhex(sys.argv[3]), True))
    elif mode == "raw":
        s = connect(sys.argv[2])
        s.settimeout(5)
        try:
            s.sendall(bytes.fromhex(sys.stdin.read().strip()))
        except (BrokenPipeError, ConnectionResetError):
            pass
        out, how = b"", "quiet"
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    how = "closed"
                    break
                out += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            how = "closed"
        emit(out)
        print(how, flush=True)
    elif mode == "flood":
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        conns = []
        for _ in range(int(sys.argv[3])):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            try:
                s.connect(sys.argv[2])
            except OSError:
                s.close()
                continue
            conns.append(s)
        print(f"OPEN {len(conns)}", flush=True)
        sys.stdin.readline()
        closed = 0
        for s in conns:
            # Drain what the agent sent (its SETTINGS, if it served this one); EOF means
            # the agent closed it.
            s.setblocking(False)
            try:
                while s.recv(65536):
                    pass
                closed += 1
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed += 1
        print(f"CLOSED {closed}", flush=True)
        sys.stdin.read()
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A plain BITS upload client on Python's socket module: the "external client" of docs/BENCHMARKS.md
(issue 18 item 5). It shares no code with bitsd, bitsbench or bitsclient: Create-Session, Fragments
of --fragment bytes (each waits for its Ack, as the Windows client does), Close-Session, over one
keep-alive connection. With --pid it reports that process's VmHWM and VmRSS from /proc at the end.

  tools/bits_upload.py --port P --size BYTES [--fragment BYTES] [--path /f] [--pid PID]

Prints key=value figures: bytes, seconds, MiBps and, with --pid, vmhwm_kib and vmrss_kib.
"""
import argparse
import socket
import sys
import time

UPLOAD_PROTOCOL = "{7df0354d-249b-430f-820d-3d2a9bef4931}"


def read_head(sock, pending):
    """Reads one response (head and its Content-Length body); returns (status, headers, rest)."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("bits_upload: connection closed while waiting for an answer")
        pending += chunk
    head, rest = pending.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("bits_upload: connection closed in an answer's body")
        rest += chunk
    return status, headers, rest[length:]


def request(path, packet, extra, length):
    return (f"BITS_POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bits_upload.py\r\n"
            f"BITS-Packet-Type: {packet}\r\n{extra}Content-Length: {length}\r\n\r\n").encode("latin-1")


def proc_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--fragment", type=int, default=8 << 20)
    ap.add_argument("--path", default="/bits_upload.bin")
    ap.add_argument("--pid", type=int, default=0)
    a = ap.parse_args()

    # One fragment's worth of bytes (a repeating pattern), sent again for every fragment.
    body = bytes(range(256)) * (a.fragment // 256) + bytes(a.fragment % 256)
    sock = socket.create_connection((a.host, a.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()
    sock.sendall(request(a.path, "Create-Session", f"BITS-Supported-Protocols: {UPLOAD_PROTOCOL}\r\n", 0))
    status, headers, pending = read_head(sock, b"")
    if status != 200 or "bits-session-id" not in headers:
        sys.exit(f"bits_upload: Create-Session answered {status}")
    sid = headers["bits-session-id"]
    view = memoryview(body)
    off = 0
    while off < a.size:
        n = min(a.fragment, a.size - off)
        rng = f"Content-Range: bytes {off}-{off + n - 1}/{a.size}\r\n"
        sock.sendall(request(a.path, "Fragment", f"BITS-Session-Id: {sid}\r\n{rng}", n))
        sock.sendall(view[:n])
        status, headers, pending = read_head(sock, pending)
        if status != 200:
            sys.exit(f"bits_upload: Fragment at {off} answered {status} {headers.get('bits-error-code', '')}")
        off += n
    sock.sendall(request(a.path, "Close-Session", f"BITS-Session-Id: {sid}\r\n", 0))
    status, _, pending = read_head(sock, pending)
    if status != 200:
        sys.exit(f"bits_upload: Close-Session answered {status}")
    seconds = time.monotonic() - t0
    sock.close()
    out = f"bytes={a.size} seconds={seconds:.3f} MiBps={a.size / seconds / 1048576:.1f}"
    if a.pid:
        out += f" vmhwm_kib={proc_kib(a.pid, 'VmHWM')} vmrss_kib={proc_kib(a.pid, 'VmRSS')}"
    print(out)


if __name__ == "__main__":
    main()

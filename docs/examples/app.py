#!/usr/bin/env python3
"""A small server application for bitsd's hand-off (docs/HANDOFF.md).

bitsd POSTs every finished upload here (--notify-type value or reference). The application
"processes" it (here: keeps a copy in inbox/ and answers with a receipt), and its answer becomes
the upload-reply the Windows client downloads.

It processes each transaction exactly once. bitsd guarantees at most one POST per transaction id
once a delivery is journaled as ended, and at most one repeat (same id) if bitsd died while the
application was working. So the application keys its work on BITS-Transaction-Id:

  1. If done/<key> exists, the transaction was processed: answer the stored receipt again.
  2. Otherwise process it, write the receipt to done/<key> (written to a temporary file, synced,
     renamed: it exists completely or not at all), then answer.

A crash of the application between its own work and step 2 would repeat the work once; make that
work idempotent too (here it is: inbox/<key>.bin is written the same way).

Only the Python standard library (Debian: apt-get install python3).
  python3 docs/examples/app.py --port 8081 --dir var/app
"""
import argparse
import base64
import hashlib
import http.server
import os
import sys


def durable_write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bitsd-example-app"

    def log_message(self, fmt, *args):
        sys.stderr.write("app: " + (fmt % args) + "\n")

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        txid = self.headers.get("BITS-Transaction-Id", "")
        if not txid:
            return self.answer(400, b"no BITS-Transaction-Id\n")
        # The key is a hash of the id: ids are client-chosen text, file names are not.
        key = hashlib.sha256(txid.encode()).hexdigest()
        done = os.path.join(self.server.dir, "done", key)
        by_reference = "BITS-Request-DataFile-Name" in self.headers
        length = int(self.headers.get("Content-Length", "0"))

        if os.path.exists(done):
            # A repeat: bitsd was killed after we processed it but before it journaled our answer.
            self.rfile.read(length)  # by value the body still comes; drop it
            with open(done, "rb") as f:
                receipt = f.read()
            self.log_message("transaction %r seen before: same receipt, not processed again", txid)
            return self.reply(receipt, by_reference)

        # Process: take the upload (body, or the file bitsd names), check its digest.
        if by_reference:
            with open(self.headers["BITS-Request-DataFile-Name"], "rb") as f:
                content = f.read()
        else:
            content = self.rfile.read(length)
        digest = "sha-256=:" + base64.b64encode(hashlib.sha256(content).digest()).decode() + ":"
        sent = self.headers.get("Repr-Digest")
        if sent is not None and sent != digest:
            return self.answer(400, b"digest mismatch\n")
        durable_write(os.path.join(self.server.dir, "inbox", key + ".bin"), content)
        receipt = ("received %d bytes for transaction %s\n%s\n" % (len(content), txid, digest)).encode()
        durable_write(done, receipt)
        self.log_message("transaction %r processed (%d bytes)", txid, len(content))
        return self.reply(receipt, by_reference)

    def reply(self, receipt, by_reference):
        if by_reference:
            # By reference the reply goes into the file bitsd names; the body stays empty.
            with open(self.headers["BITS-Response-DataFile-Name"], "wb") as f:
                f.write(receipt)
            return self.answer(200)
        return self.answer(200, receipt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--dir", default="var/app", help="where inbox/ and done/ live")
    args = ap.parse_args()
    for sub in ("inbox", "done"):
        os.makedirs(os.path.join(args.dir, sub), exist_ok=True)
    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    server.dir = args.dir
    print("app listening on http://127.0.0.1:%d/app" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

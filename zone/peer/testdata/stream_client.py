"""A client of pzp.sock's streams in Python's standard library only: it
dials a stream service and echoes what it reads back, framed as
docs/PROTOCOL.md says, and serves a stream service of its own that
answers each stream in upper case.

usage: stream_client.py SOCKET CREDENTIAL dial ADDR MESSAGE
       stream_client.py SOCKET CREDENTIAL listen SERVICE COUNT
"""
import json
import socket
import struct
import sys

DATA, END, ABORT = 0, 1, 2


def upgrade(sock_path, cred, path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    req = ("GET %s HTTP/1.1\r\nHost: local\r\nConnection: Upgrade\r\n"
           "Upgrade: pzone-stream\r\nAuthorization: Bearer %s\r\n\r\n") % (path, cred)
    s.sendall(req.encode())
    f = s.makefile("rb")
    status = f.readline().decode()
    headers = {}
    while True:
        line = f.readline().decode().strip()
        if not line:
            break
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if " 101 " not in status:
        body = f.read(int(headers.get("content-length", "0")))
        raise SystemExit("refused: %s %s" % (status.strip(), body.decode()))
    return s, f, headers


def send(s, typ, payload=b""):
    s.sendall(struct.pack(">B", typ) + len(payload).to_bytes(3, "big") + payload)


def read_all(f):
    """Reads frames to the end of the other side's direction."""
    out = b""
    while True:
        hdr = f.read(4)
        if len(hdr) < 4:
            raise SystemExit("the stream broke off")
        typ, n = hdr[0], int.from_bytes(hdr[1:4], "big")
        payload = f.read(n)
        if typ == DATA:
            out += payload
        elif typ == END:
            return out
        else:
            raise SystemExit("cut: status %d: %s" % (payload[0], payload[1:].decode()))


def dial(sock_path, cred, addr, message):
    s, f, headers = upgrade(sock_path, cred, "/v1/streams/dial?to=" + addr)
    send(s, DATA, message.encode())
    send(s, END)
    s.shutdown(socket.SHUT_WR)
    print("peer %s echoed %s" % (headers.get("pzone-stream-peer"), read_all(f).decode()))


def listen(sock_path, cred, service, count):
    ev = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ev.connect(sock_path)
    ev.sendall(("GET /v1/services/%s/events?streams=accept HTTP/1.1\r\nHost: local\r\n"
                "Authorization: Bearer %s\r\n\r\n" % (service, cred)).encode())
    f = ev.makefile("rb")
    status = f.readline().decode()
    if " 200 " not in status:
        raise SystemExit("listen refused: " + status)
    while f.readline().strip():
        pass  # headers
    print("listening", flush=True)
    served = 0
    while served < count:
        size = int(f.readline().strip(), 16)  # chunked encoding
        chunk = f.read(size + 2)[:-2]
        for line in chunk.splitlines():
            e = json.loads(line)
            if e["type"] != "stream":
                continue
            s, sf, _ = upgrade(sock_path, cred, "/v1/streams/%s/accept" % e["id"])
            data = read_all(sf)
            send(s, DATA, data.upper())
            send(s, END)
            s.shutdown(socket.SHUT_WR)
            s.close()
            print("served %s" % e["from"], flush=True)
            served += 1


if __name__ == "__main__":
    sock_path, cred, verb = sys.argv[1], sys.argv[2], sys.argv[3]
    if verb == "dial":
        dial(sock_path, cred, sys.argv[4], sys.argv[5])
    else:
        listen(sock_path, cred, sys.argv[4], int(sys.argv[5]))

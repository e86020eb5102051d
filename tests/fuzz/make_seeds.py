"""Writes the seed corpus of h2_server_session_fuzzer into the directory given: a few client
conversations in HTTP/2 frames (after the preface, which the harness sends itself), each
prefixed with the byte that picks the size of the reads."""
import os
import struct
import sys


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    # HPACK literal header field without indexing, new name; lengths under 127.
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request(path=b"/pkg.Svc/Echo", extra=()):
    fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
              (b":authority", b"localhost"), (b"content-type", b"application/grpc"),
              (b"te", b"trailers"), *extra]
    return b"".join(literal(n, v) for n, v in fields)


def message(body, compressed=False):
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(body)) + body


SETTINGS, DATA, HEADERS, RST, PING, GOAWAY, WINDOW, CONTINUATION = 4, 0, 1, 3, 6, 7, 8, 9
END_STREAM, END_HEADERS = 1, 4
settings = frame(SETTINGS, 0, 0)

seeds = {
    "unary": settings + frame(HEADERS, END_HEADERS, 1, request())
    + frame(DATA, END_STREAM, 1, message(b"hello")),
    "bidi": settings + frame(HEADERS, END_HEADERS, 1, request(b"/x.Svc/Chat"))
    + b"".join(frame(DATA, 0, 1, message(b"m%d" % i)) for i in range(8))
    + frame(DATA, END_STREAM, 1, b""),
    "split_message": settings + frame(HEADERS, END_HEADERS, 3, request())
    + frame(DATA, 0, 3, message(b"a" * 40)[:9]) + frame(DATA, END_STREAM, 3, message(b"a" * 40)[9:]),
    "metadata": settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, request(
        extra=[(b"grpc-timeout", b"100m"), (b"x-key", b"v"), (b"x-key-bin", b"AAEC")])),
    "finish_and_cancel": settings + frame(HEADERS, END_HEADERS, 1, request())
    + frame(DATA, 0, 1, message(b"fail")) + frame(HEADERS, END_HEADERS, 3, request())
    + frame(DATA, 0, 3, message(b"cancel")),
    "resets": settings + b"".join(frame(HEADERS, END_HEADERS, i, request())
                                  + frame(RST, 0, i, struct.pack(">I", 8)) for i in range(1, 60, 2)),
    "continuation": settings + frame(HEADERS, 0, 1, request()[:20])
    + frame(CONTINUATION, END_HEADERS, 1, request()[20:]) + frame(DATA, END_STREAM, 1, message(b"x")),
    "control": settings + frame(PING, 0, 0, b"12345678") + frame(WINDOW, 0, 0, struct.pack(">I", 1000))
    + frame(SETTINGS, 1, 0) + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)),
    "bad_requests": settings
    + frame(HEADERS, END_HEADERS, 1, request(extra=[(b"grpc-encoding", b"br")]))
    + frame(HEADERS, END_HEADERS | END_STREAM, 3, request(extra=[(b"grpc-timeout", b"x")]))
    + frame(HEADERS, END_HEADERS, 5, request()) + frame(DATA, END_STREAM, 5, message(b"z", True)),
}

os.makedirs(sys.argv[1], exist_ok=True)
for name, conversation in seeds.items():
    for read_size in (0, 6, 255):
        with open(os.path.join(sys.argv[1], f"seed_{name}_{read_size}"), "wb") as f:
            f.write(bytes([read_size]) + conversation)

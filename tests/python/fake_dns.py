#!/usr/bin/python3
"""A DNS server for one test: answers every A query with one IPv4 address, and every other query
with no records. Prints "dns listening on port N" (UDP, 127.0.0.1); a line "answer IP" on stdin
changes the address; EOF on stdin ends it.

Usage: fake_dns.py --answer IP
"""

import argparse
import select
import socket
import struct
import sys

TYPE_A = 1


def respond(query, address):
    """The response to `query` (a DNS message): its question, and an A record when asked for."""
    if len(query) < 12:
        return None
    ident, _flags, qdcount = struct.unpack('!HHH', query[:6])
    if qdcount != 1:
        return None
    end = 12
    while end < len(query) and query[end] != 0:
        end += 1 + query[end]
    question = query[12:end + 5]  # name, its terminating zero, type and class
    if len(question) < 5:
        return None
    qtype = struct.unpack('!H', question[-4:-2])[0]
    answers = b''
    if qtype == TYPE_A:
        answers = struct.pack('!HHHIH', 0xC00C, TYPE_A, 1, 0, 4) + socket.inet_aton(address)
    header = struct.pack('!HHHHHH', ident, 0x8180, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--answer', required=True)
    args = parser.parse_args()
    address = args.answer
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('127.0.0.1', 0))
    print('dns listening on port %d' % sock.getsockname()[1], flush=True)
    while True:
        readable, _, _ = select.select([sock, sys.stdin], [], [])
        if sys.stdin in readable:
            line = sys.stdin.readline()
            if not line:
                return 0
            if line.startswith('answer '):
                address = line.split()[1]
                print('answering %s' % address, flush=True)
        if sock in readable:
            query, peer = sock.recvfrom(4096)
            response = respond(query, address)
            if response:
                sock.sendto(response, peer)


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/python3
"""One call of trellis.testing.Echo/Echo from python3-grpcio, as the options say.

Prints "calling" once the channel is connected and the call is about to go out, then
"reply LENGTH" (the length of the echoed message) or "error CODE".

Usage: call_echo.py --target HOST:PORT [--size N] [--compression gzip|deflate|none]
                    [--delay-ms D] [--timeout-s S]
"""

import argparse
import sys

import grpc

from trellis.testing import echo_pb2

COMPRESSION = {'none': grpc.Compression.NoCompression, 'gzip': grpc.Compression.Gzip,
               'deflate': grpc.Compression.Deflate}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--target', required=True)
    parser.add_argument('--size', type=int, default=5)
    parser.add_argument('--compression', choices=COMPRESSION, default='none')
    parser.add_argument('--delay-ms', type=int, default=0)
    parser.add_argument('--timeout-s', type=float, default=60)
    args = parser.parse_args()

    with grpc.insecure_channel(args.target) as channel:
        grpc.channel_ready_future(channel).result(timeout=args.timeout_s)
        echo = channel.unary_unary('/trellis.testing.Echo/Echo',
                                   request_serializer=echo_pb2.EchoRequest.SerializeToString,
                                   response_deserializer=echo_pb2.EchoResponse.FromString)
        request = echo_pb2.EchoRequest(message='a' * args.size, delay_ms=args.delay_ms)
        print('calling', flush=True)
        try:
            response = echo(request, timeout=args.timeout_s,
                            compression=COMPRESSION[args.compression])
            print('reply %d' % len(response.message), flush=True)
        except grpc.RpcError as error:
            print('error %s' % error.code().name, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

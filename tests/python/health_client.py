#!/usr/bin/python3
"""A python3-grpcio client of the standard health service, grpc.health.v1.Health.

check NAME...: calls Check for each name, one line each: "check 'NAME': SERVING" or
               "check 'NAME': error NOT_FOUND".
watch NAME:    calls Watch and prints "watch 'NAME': STATUS" for every message, then
               "watch 'NAME' ended: OK" when the server ends the stream, or
               "watch 'NAME' ended: CODE" when it fails.

The messages come from `protoc --python_out` on Debian's grpc-proto (grpc_tools and
grpcio-health-checking are not packaged in Debian 12), so the stubs are built by hand; put the
generated modules on PYTHONPATH (health_pb2 at the top level: grpcio owns the grpc package). Every call has a deadline, so the client always ends.

Usage: health_client.py --target HOST:PORT check NAME... | watch NAME
"""

import argparse
import sys

import grpc

import health_pb2  # grpc/health/v1/health.proto, generated as a top-level module

TIMEOUT_S = 60  # the bound of every call
STATUS = health_pb2.HealthCheckResponse.ServingStatus


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--target', required=True)
    parser.add_argument('mode', choices=['check', 'watch'])
    parser.add_argument('names', nargs='+')
    args = parser.parse_args()

    with grpc.insecure_channel(args.target) as channel:
        if args.mode == 'check':
            check = channel.unary_unary(
                '/grpc.health.v1.Health/Check',
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString)
            for name in args.names:
                try:
                    response = check(health_pb2.HealthCheckRequest(service=name),
                                     timeout=TIMEOUT_S)
                    print('check %r: %s' % (name, STATUS.Name(response.status)), flush=True)
                except grpc.RpcError as error:
                    print('check %r: error %s' % (name, error.code().name), flush=True)
            return 0

        watch = channel.unary_stream(
            '/grpc.health.v1.Health/Watch',
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        name = args.names[0]
        try:
            for response in watch(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT_S):
                print('watch %r: %s' % (name, STATUS.Name(response.status)), flush=True)
            print('watch %r ended: OK' % name, flush=True)
        except grpc.RpcError as error:
            print('watch %r ended: %s' % (name, error.code().name), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

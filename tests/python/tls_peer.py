#!/usr/bin/python3
"""A python3-grpcio TLS peer of trellis.testing.Echo, for Trellis's TLS and mTLS tests.

server: serves Echo/Echo over TLS with --cert and --key; with --client-ca it asks clients for a
  certificate (and with --require-client-cert refuses those without one). The reply's message is
  "<message> from <the client certificate's CN>" ("anonymous" without one), so the test sees what
  the python side verified. Prints "listening on port N"; stops on SIGTERM, SIGINT or when its
  stdin closes.
client: makes one Echo call over TLS (grpc.ssl_channel_credentials) with --ca, and --cert/--key
  for mutual TLS; prints "reply: <message>" and exits 0, or "error: <CODE>: <details>" and exits 1.

The messages come from `protoc --python_out` (grpc_tools is not packaged in Debian 12); put the
generated modules on PYTHONPATH.

Usage: tls_peer.py server --cert F --key F [--client-ca F [--require-client-cert]] [--port 0]
       tls_peer.py client --target HOST:PORT --ca F [--cert F --key F] [--server-name N]
                          [--message M]
"""

import argparse
import os
import signal
import sys
import threading
from concurrent import futures

import grpc

from trellis.testing import echo_pb2

SERVICE = 'trellis.testing.Echo'
TIMEOUT_S = 30  # the bound of the client's call


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def echo(request, context):
    names = context.auth_context().get('x509_common_name') or [b'anonymous']
    return echo_pb2.EchoResponse(message='%s from %s' % (request.message, names[0].decode()),
                                 peer=context.peer())


def serve(args):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())

    credentials = grpc.ssl_server_credentials(
        [(read(args.key), read(args.cert))],
        root_certificates=read(args.client_ca) if args.client_ca else None,
        require_client_auth=args.require_client_cert)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[('grpc.so_reuseport', 0)])
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        'Echo':
            grpc.unary_unary_rpc_method_handler(
                echo,
                request_deserializer=echo_pb2.EchoRequest.FromString,
                response_serializer=echo_pb2.EchoResponse.SerializeToString),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port('127.0.0.1:%d' % args.port, credentials)
    if port == 0:
        print('cannot listen on port %d' % args.port, file=sys.stderr, flush=True)
        return 1
    server.start()

    def watch_stdin():
        # Raw reads of fd 0: a daemon thread blocked in a buffered read would hold its lock at
        # interpreter shutdown, which is fatal.
        while os.read(sys.stdin.fileno(), 4096):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print('listening on port %d' % port, flush=True)
    stop.wait()
    server.stop(grace=1).wait()
    print('stopped', flush=True)
    return 0


def call(args):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key) if args.key else None,
        certificate_chain=read(args.cert) if args.cert else None)
    options = [('grpc.enable_http_proxy', 0)]
    if args.server_name:
        options.append(('grpc.ssl_target_name_override', args.server_name))
    with grpc.secure_channel(args.target, credentials, options=options) as channel:
        method = channel.unary_unary('/%s/Echo' % SERVICE,
                                     request_serializer=echo_pb2.EchoRequest.SerializeToString,
                                     response_deserializer=echo_pb2.EchoResponse.FromString)
        try:
            response = method(echo_pb2.EchoRequest(message=args.message), timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            print('error: %s: %s' % (error.code().name, error.details()), flush=True)
            return 1
        print('reply: %s' % response.message, flush=True)
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest='mode', required=True)
    server = modes.add_parser('server')
    server.add_argument('--cert', required=True)
    server.add_argument('--key', required=True)
    server.add_argument('--client-ca')
    server.add_argument('--require-client-cert', action='store_true')
    server.add_argument('--port', type=int, default=0)
    client = modes.add_parser('client')
    client.add_argument('--target', required=True)
    client.add_argument('--ca', required=True)
    client.add_argument('--cert')
    client.add_argument('--key')
    client.add_argument('--server-name')
    client.add_argument('--message', default='hello')
    args = parser.parse_args()
    return serve(args) if args.mode == 'server' else call(args)


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/python3
"""A reference trellis.testing.Echo server written with python3-grpcio, for Trellis peer tests.

It behaves like EchoImpl (tests/echo_service.hpp), so a Trellis client can be tested against a
server nobody here wrote:
  - message is echoed; remaining_deadline_ms is the deadline left when the call was seen (-1 if
    none); peer is the client's address as gRPC spells it.
  - status_code != 0 fails the call with that code, status_message and status_details (sent raw
    in the grpc-status-details-bin trailer).
  - echo_metadata sends request metadata whose key starts with "echo-" back as response header
    and trailer ("-bin" keys included).
  - delay_ms prints "handler started: <message>" and waits that long, or less when the call ends
    first (client cancellation or deadline); then the handler prints "handler cancelled:
    <message>" and fails the call with CANCELLED. Tests read these lines to see the server side.
  - throw_exception raises. Unlike Trellis (INTERNAL, "internal error"), grpcio answers such a
    call UNKNOWN with "Exception calling application: ...": a documented difference, not a bug.

The messages come from `protoc --python_out` (grpc_tools is not packaged in Debian 12), so the
service is registered by hand with a generic handler; put the generated modules on PYTHONPATH.

Usage: echo_server.py [--host 127.0.0.1] [--port 0] [--exit-on-stdin-eof]
Prints "listening on port N" once serving; stops gracefully on SIGTERM or SIGINT (and, with
--exit-on-stdin-eof, when its stdin is closed, so it never outlives a parent that died).
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
CODES = {code.value[0]: code for code in grpc.StatusCode}
# A deadline further away than this is no deadline (grpcio reports "none" as a huge number).
NO_DEADLINE_S = 10 * 365 * 24 * 3600


def log(line):
    print(line, flush=True)


def echo(request, context):
    if request.throw_exception:
        raise RuntimeError('handler exploded on purpose')
    trailing = []
    if request.echo_metadata:
        echoed = tuple((k, v) for k, v in context.invocation_metadata() if k.startswith('echo-'))
        context.send_initial_metadata(echoed)
        trailing.extend(echoed)
    remaining = context.time_remaining()
    if request.delay_ms > 0:
        log('handler started: ' + request.message)
        ended = threading.Event()
        # add_callback runs the callback when the call terminates; it returns False when the call
        # has terminated already.
        if not context.add_callback(ended.set) or ended.wait(request.delay_ms / 1000.0):
            log('handler cancelled: ' + request.message)
            context.abort(grpc.StatusCode.CANCELLED, 'handler saw the cancellation')
    if request.status_code != 0:
        if request.status_details:
            trailing.append(('grpc-status-details-bin', request.status_details))
        context.set_trailing_metadata(tuple(trailing))
        code = CODES.get(request.status_code, grpc.StatusCode.UNKNOWN)
        context.abort(code, request.status_message)
    context.set_trailing_metadata(tuple(trailing))
    response = echo_pb2.EchoResponse(message=request.message, peer=context.peer())
    if remaining is None or remaining > NO_DEADLINE_S:
        response.remaining_deadline_ms = -1
    else:
        response.remaining_deadline_ms = int(remaining * 1000)
    return response


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--exit-on-stdin-eof', action='store_true')
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[('grpc.so_reuseport', 0)])
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        'Echo':
            grpc.unary_unary_rpc_method_handler(
                echo,
                request_deserializer=echo_pb2.EchoRequest.FromString,
                response_serializer=echo_pb2.EchoResponse.SerializeToString),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port('%s:%d' % (args.host, args.port))
    if port == 0:
        print('cannot listen on %s:%d' % (args.host, args.port), file=sys.stderr, flush=True)
        return 1
    server.start()

    if args.exit_on_stdin_eof:

        def watch_stdin():
            # Raw reads of fd 0: a daemon thread blocked in a buffered read would hold its lock
            # at interpreter shutdown, which is fatal.
            while os.read(sys.stdin.fileno(), 4096):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    log('listening on port %d' % port)
    stop.wait()
    server.stop(grace=1).wait()
    log('stopped')
    return 0


if __name__ == '__main__':
    sys.exit(main())

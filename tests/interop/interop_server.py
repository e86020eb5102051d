#!/usr/bin/python3
"""A reference grpc.testing.TestService server written with python3-grpcio, for interop tests.

It implements the server features of gRPC's doc/interop-test-descriptions.md:
  - EmptyCall returns the empty message.
  - UnaryCall answers with a payload of response_size zero bytes (only the COMPRESSABLE
    response_type exists; any other fails with INVALID_ARGUMENT).
  - StreamingOutputCall sends one response per response_parameters entry, each with `size` zero
    bytes, after waiting `interval_us` (relative to the previous response).
  - StreamingInputCall returns the sum of the request payload sizes on half close.
  - FullDuplexCall answers each request as it arrives, as StreamingOutputCall does.
  - HalfDuplexCall buffers every request until half close, then answers them in order.
  - Echo Status: a request whose response_status has a non-zero code ends the call with that
    code and message (in UnaryCall and in all the streaming calls, where no later request is
    processed).
  - Echo Metadata: "x-grpc-test-echo-initial" is sent back as initial metadata and
    "x-grpc-test-echo-trailing-bin" as trailing metadata (errors included), in every method.
  - UnimplementedCall is deliberately not implemented: it answers UNIMPLEMENTED, and so does the
    service grpc.testing.UnimplementedService, which is not registered at all.
Not supported: TLS, the compression features (grpcio cannot see whether a request was
compressed), CacheableUnaryCall, and the auth echo features.

The modules come from protoc and grpc_python_plugin (see interop_protos.py); put the generated
modules on PYTHONPATH.

Usage: interop_server.py [--host 127.0.0.1] [--port 0] [--use_tls false] [--exit-on-stdin-eof]
Prints "listening on port N" once serving (port 0 picks a free port); stops gracefully on
SIGTERM or SIGINT (and, with --exit-on-stdin-eof, when its stdin is closed, so it never outlives
a parent that died).
"""

import argparse
import os
import signal
import sys
import threading
from concurrent import futures

import grpc

from interop_protos import empty_pb2, messages_pb2, test_pb2_grpc

CODES = {code.value[0]: code for code in grpc.StatusCode}
ECHO_INITIAL_KEY = 'x-grpc-test-echo-initial'
ECHO_TRAILING_KEY = 'x-grpc-test-echo-trailing-bin'


def log(line):
    print(line, flush=True)


def zeros(size):
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=bytes(size))


def echo_metadata(context):
    """Echo Metadata: sends the echo keys of the request back as initial / trailing metadata."""
    received = context.invocation_metadata()
    initial = tuple((key, value) for key, value in received if key == ECHO_INITIAL_KEY)
    trailing = tuple((key, value) for key, value in received if key == ECHO_TRAILING_KEY)
    if initial:
        context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)


def echo_status(status, context):
    """Echo Status: ends the call with status.code and status.message unless the code is OK."""
    if status.code != 0:
        context.abort(CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message)


def check_response_type(response_type, context):
    if response_type != messages_pb2.COMPRESSABLE:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      'unsupported response_type %d' % response_type)


def call_ended(context):
    """Returns an Event that is set once the call has terminated (done, cancelled, expired)."""
    ended = threading.Event()
    # add_callback returns False when the call has terminated already.
    if not context.add_callback(ended.set):
        ended.set()
    return ended


def streaming_responses(request, context, ended):
    """Yields the responses a StreamingOutputCallRequest asks for, or ends the call with its
    response_status. Stops early when the call ends while waiting for an interval."""
    echo_status(request.response_status, context)
    check_response_type(request.response_type, context)
    for parameters in request.response_parameters:
        if parameters.interval_us > 0 and ended.wait(parameters.interval_us / 1e6):
            return
        yield messages_pb2.StreamingOutputCallResponse(payload=zeros(parameters.size))


class TestService(test_pb2_grpc.TestServiceServicer):
    """The interop server features. Methods it does not override (UnimplementedCall,
    CacheableUnaryCall) answer UNIMPLEMENTED through the generated base class."""

    def EmptyCall(self, request, context):
        echo_metadata(context)
        return empty_pb2.Empty()

    def UnaryCall(self, request, context):
        echo_metadata(context)
        echo_status(request.response_status, context)
        check_response_type(request.response_type, context)
        return messages_pb2.SimpleResponse(payload=zeros(request.response_size))

    def StreamingOutputCall(self, request, context):
        echo_metadata(context)
        yield from streaming_responses(request, context, call_ended(context))

    def StreamingInputCall(self, request_iterator, context):
        echo_metadata(context)
        total = sum(len(request.payload.body) for request in request_iterator)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        ended = call_ended(context)
        for request in request_iterator:
            yield from streaming_responses(request, context, ended)

    def HalfDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        ended = call_ended(context)
        for request in list(request_iterator):
            yield from streaming_responses(request, context, ended)


def parse_bool(text):
    if text.lower() not in ('true', 'false'):
        raise argparse.ArgumentTypeError('expected true or false, got %r' % text)
    return text.lower() == 'true'


def watch_stdin(stop):
    """Sets `stop` once stdin reaches end of file."""
    # Raw reads of fd 0: a daemon thread blocked in a buffered read would hold its lock at
    # interpreter shutdown, which is fatal.
    while os.read(sys.stdin.fileno(), 4096):
        pass
    stop.set()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0 picks a free port')
    parser.add_argument('--use_tls', type=parse_bool, default=False, help='only false works')
    parser.add_argument('--exit-on-stdin-eof', action='store_true')
    args = parser.parse_args()
    if args.use_tls:
        parser.error('TLS is not supported; pass --use_tls=false')

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                         options=[('grpc.so_reuseport', 0)])
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    port = server.add_insecure_port('%s:%d' % (args.host, args.port))
    if port == 0:
        print('cannot listen on %s:%d' % (args.host, args.port), file=sys.stderr, flush=True)
        return 1
    server.start()
    if args.exit_on_stdin_eof:
        threading.Thread(target=watch_stdin, args=(stop,), daemon=True).start()

    log('listening on port %d' % port)
    stop.wait()
    server.stop(grace=1).wait()
    log('stopped')
    return 0


if __name__ == '__main__':
    sys.exit(main())

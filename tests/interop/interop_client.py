#!/usr/bin/python3
"""A python3-grpcio client for the gRPC interop test cases (doc/interop-test-descriptions.md).

Runs these cases against any grpc.testing.TestService server, each checked as the descriptions
say: empty_unary, large_unary, client_streaming, server_streaming, ping_pong, empty_stream,
cancel_after_begin, cancel_after_first_response, timeout_on_sleeping_server, custom_metadata,
status_code_and_message, special_status_message, unimplemented_method, unimplemented_service.

Prints one line per case, "PASS name" or "FAIL name: reason", and exits 0 only if every case
passed. Every call has a deadline (--rpc_timeout_s, except timeout_on_sleeping_server's 1 ms),
so a run always ends. --use_tls true calls over TLS, trusting the PEM CAs in --tls_ca, and
checks the server's certificate against --server_host_override when given.

The modules come from protoc and grpc_python_plugin (see interop_protos.py); put the generated
modules on PYTHONPATH.

Usage: interop_client.py --server_port PORT [--server_host localhost] [--test_case all|NAME]
                         [--rpc_timeout_s 10]
                         [--use_tls true --tls_ca FILE [--server_host_override NAME]]
"""

import argparse
import queue
import sys
import traceback

import grpc

from interop_protos import empty_pb2, messages_pb2, test_pb2_grpc

LARGE_REQUEST_SIZE = 271828
LARGE_RESPONSE_SIZE = 314159
REQUEST_SIZES = (27182, 8, 1828, 45904)
RESPONSE_SIZES = (31415, 9, 2653, 58979)
ECHO_INITIAL = ('x-grpc-test-echo-initial', 'test_initial_metadata_value')
ECHO_TRAILING = ('x-grpc-test-echo-trailing-bin', b'\xab\xab\xab')
STATUS_MESSAGE = 'test status message'
SPECIAL_STATUS_MESSAGE = '\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n'


class CheckFailed(Exception):
    pass


def expect(condition, why):
    if not condition:
        raise CheckFailed(why)


def expect_eq(actual, expected, what):
    expect(actual == expected, '%s: expected %r, got %r' % (what, expected, actual))


def expect_error(fn, code):
    """Calls fn(), which must fail with `code`; returns the grpc.RpcError."""
    try:
        result = fn()
    except grpc.RpcError as error:
        expect(error.code() == code, 'expected status %s, got %s: %r' %
               (code.name, error.code().name, error.details()))
        return error
    raise CheckFailed('expected %s, the call succeeded with %s' % (code.name, describe(result)))


def describe(message):
    """A one-line description of a response (their payloads are too big to print)."""
    return '%s of %d bytes' % (type(message).__name__, message.ByteSize())


def zeros(size):
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=bytes(size))


def expect_payload(payload, size, what):
    """The payload is `size` zero bytes of type COMPRESSABLE (sizes are reported, not bodies)."""
    expect_eq(len(payload.body), size, what + ' payload size')
    expect(payload.body == bytes(size), what + ' payload is not all zeros')
    expect_eq(payload.type, messages_pb2.COMPRESSABLE, what + ' payload type')


def streaming_request(response_sizes, request_size=0, status=None):
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=n) for n in response_sizes])
    if request_size:
        request.payload.CopyFrom(zeros(request_size))
    if status is not None:
        request.response_status.CopyFrom(status)
    return request


def expect_end(responses):
    """The response stream has no more messages and ended with OK."""
    extra = next(responses, None)
    if extra is not None:
        raise CheckFailed('unexpected extra response of %d bytes' % len(extra.payload.body))
    expect_eq(responses.code(), grpc.StatusCode.OK, 'final status')


def metadata_values(metadata, key):
    return [value for k, value in (metadata or ()) if k == key]


def expect_echoed_metadata(call, what):
    key, value = ECHO_INITIAL
    expect_eq(metadata_values(call.initial_metadata(), key), [value], what + ' initial ' + key)
    key, value = ECHO_TRAILING
    expect_eq(metadata_values(call.trailing_metadata(), key), [value], what + ' trailing ' + key)


class RequestPipe:
    """A request iterator fed one message at a time, so a stream stays open between messages.

    close() half-closes the stream; use it as a context manager so it is always closed (grpcio
    reads requests on its own thread, which would otherwise block forever)."""

    _CLOSED = object()

    def __init__(self):
        self._requests = queue.Queue()

    def __iter__(self):
        return self

    def __next__(self):
        request = self._requests.get()
        if request is self._CLOSED:
            self._requests.put(self._CLOSED)  # stay closed for any later read
            raise StopIteration
        return request

    def add(self, request):
        self._requests.put(request)

    def close(self):
        self._requests.put(self._CLOSED)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class Cases:
    """The interop cases; each method raises (CheckFailed, grpc.RpcError, ...) to fail."""

    def __init__(self, channel, timeout_s):
        self.stub = test_pb2_grpc.TestServiceStub(channel)
        self.unimplemented_stub = test_pb2_grpc.UnimplementedServiceStub(channel)
        self.timeout_s = timeout_s

    def empty_unary(self):
        response = self.stub.EmptyCall(empty_pb2.Empty(), timeout=self.timeout_s)
        expect(isinstance(response, empty_pb2.Empty), 'response is a %s' % type(response).__name__)

    def large_unary(self):
        request = messages_pb2.SimpleRequest(response_size=LARGE_RESPONSE_SIZE,
                                             payload=zeros(LARGE_REQUEST_SIZE))
        response = self.stub.UnaryCall(request, timeout=self.timeout_s)
        expect_payload(response.payload, LARGE_RESPONSE_SIZE, 'response')

    def client_streaming(self):
        requests = [
            messages_pb2.StreamingInputCallRequest(payload=zeros(n)) for n in REQUEST_SIZES
        ]
        response = self.stub.StreamingInputCall(iter(requests), timeout=self.timeout_s)
        expect_eq(response.aggregated_payload_size, 74922, 'aggregated_payload_size')

    def server_streaming(self):
        responses = self.stub.StreamingOutputCall(streaming_request(RESPONSE_SIZES),
                                                  timeout=self.timeout_s)
        sizes = [len(response.payload.body) for response in responses]
        expect_eq(sizes, list(RESPONSE_SIZES), 'response sizes')
        expect_eq(responses.code(), grpc.StatusCode.OK, 'final status')

    def ping_pong(self):
        with RequestPipe() as pipe:
            responses = self.stub.FullDuplexCall(pipe, timeout=self.timeout_s)
            for i, (request_size, response_size) in enumerate(zip(REQUEST_SIZES,
                                                                  RESPONSE_SIZES)):
                pipe.add(streaming_request([response_size], request_size))
                response = next(responses, None)
                expect(response is not None, 'stream ended before response %d' % i)
                expect_payload(response.payload, response_size, 'response %d' % i)
            pipe.close()
            expect_end(responses)

    def empty_stream(self):
        responses = self.stub.FullDuplexCall(iter(()), timeout=self.timeout_s)
        expect_end(responses)

    def cancel_after_begin(self):
        with RequestPipe() as pipe:
            future = self.stub.StreamingInputCall.future(pipe, timeout=self.timeout_s)
            future.cancel()
            expect(future.cancelled(), 'the call was not cancelled')
            expect_eq(future.code(), grpc.StatusCode.CANCELLED, 'status code')

    def cancel_after_first_response(self):
        with RequestPipe() as pipe:
            responses = self.stub.FullDuplexCall(pipe, timeout=self.timeout_s)
            pipe.add(streaming_request([31415], 27182))
            response = next(responses, None)
            expect(response is not None, 'stream ended before the first response')
            expect_payload(response.payload, 31415, 'first response')
            responses.cancel()
            expect_error(lambda: next(responses), grpc.StatusCode.CANCELLED)
            expect_eq(responses.code(), grpc.StatusCode.CANCELLED, 'status code')

    def timeout_on_sleeping_server(self):
        with RequestPipe() as pipe:
            responses = self.stub.FullDuplexCall(pipe, timeout=0.001)
            pipe.add(messages_pb2.StreamingOutputCallRequest(payload=zeros(27182)))
            expect_error(lambda: next(responses), grpc.StatusCode.DEADLINE_EXCEEDED)

    def custom_metadata(self):
        metadata = (ECHO_INITIAL, ECHO_TRAILING)
        request = messages_pb2.SimpleRequest(response_size=LARGE_RESPONSE_SIZE,
                                             payload=zeros(LARGE_REQUEST_SIZE))
        response, call = self.stub.UnaryCall.with_call(request,
                                                       metadata=metadata,
                                                       timeout=self.timeout_s)
        expect_payload(response.payload, LARGE_RESPONSE_SIZE, 'UnaryCall response')
        expect_echoed_metadata(call, 'UnaryCall')

        request = streaming_request([LARGE_RESPONSE_SIZE], LARGE_REQUEST_SIZE)
        responses = self.stub.FullDuplexCall(iter([request]),
                                             metadata=metadata,
                                             timeout=self.timeout_s)
        response = next(responses, None)
        expect(response is not None, 'FullDuplexCall ended without a response')
        expect_payload(response.payload, LARGE_RESPONSE_SIZE, 'FullDuplexCall response')
        expect_end(responses)
        expect_echoed_metadata(responses, 'FullDuplexCall')

    def _expect_echoed_status(self, message, with_full_duplex):
        status = messages_pb2.EchoStatus(code=2, message=message)
        request = messages_pb2.SimpleRequest(response_status=status)
        error = expect_error(lambda: self.stub.UnaryCall(request, timeout=self.timeout_s),
                             grpc.StatusCode.UNKNOWN)
        expect_eq(error.details(), message, 'UnaryCall status message')
        if with_full_duplex:
            responses = self.stub.FullDuplexCall(iter([streaming_request([], status=status)]),
                                                 timeout=self.timeout_s)
            error = expect_error(lambda: next(responses), grpc.StatusCode.UNKNOWN)
            expect_eq(error.details(), message, 'FullDuplexCall status message')

    def status_code_and_message(self):
        self._expect_echoed_status(STATUS_MESSAGE, with_full_duplex=True)

    def special_status_message(self):
        self._expect_echoed_status(SPECIAL_STATUS_MESSAGE, with_full_duplex=False)

    def unimplemented_method(self):
        expect_error(lambda: self.stub.UnimplementedCall(empty_pb2.Empty(),
                                                         timeout=self.timeout_s),
                     grpc.StatusCode.UNIMPLEMENTED)

    def unimplemented_service(self):
        expect_error(
            lambda: self.unimplemented_stub.UnimplementedCall(empty_pb2.Empty(),
                                                              timeout=self.timeout_s),
            grpc.StatusCode.UNIMPLEMENTED)


CASE_NAMES = (
    'empty_unary',
    'large_unary',
    'client_streaming',
    'server_streaming',
    'ping_pong',
    'empty_stream',
    'cancel_after_begin',
    'cancel_after_first_response',
    'timeout_on_sleeping_server',
    'custom_metadata',
    'status_code_and_message',
    'special_status_message',
    'unimplemented_method',
    'unimplemented_service',
)


def run_case(cases, name):
    """Runs one case, prints its PASS / FAIL line and returns whether it passed."""
    try:
        getattr(cases, name)()
    except CheckFailed as failure:
        print('FAIL %s: %s' % (name, failure), flush=True)
        return False
    except grpc.RpcError as error:
        print('FAIL %s: unexpected status %s: %r' % (name, error.code(), error.details()),
              flush=True)
        return False
    except Exception:  # pylint: disable=broad-except
        print('FAIL %s: unexpected exception\n%s' % (name, traceback.format_exc()), flush=True)
        return False
    print('PASS %s' % name, flush=True)
    return True


def parse_bool(text):
    if text.lower() not in ('true', 'false'):
        raise argparse.ArgumentTypeError('expected true or false, got %r' % text)
    return text.lower() == 'true'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--server_host', default='localhost')
    parser.add_argument('--server_port', type=int, required=True)
    parser.add_argument('--test_case', default='all', choices=('all',) + CASE_NAMES)
    parser.add_argument('--use_tls', type=parse_bool, default=False, help='call over TLS')
    parser.add_argument('--tls_ca', help="PEM CA file the server's certificate must chain to")
    parser.add_argument('--server_host_override',
                        help="the name the server's certificate is checked against")
    parser.add_argument('--rpc_timeout_s',
                        type=float,
                        default=10.0,
                        help='the deadline of every call expected to finish')
    args = parser.parse_args()
    if not args.use_tls and (args.tls_ca or args.server_host_override):
        parser.error('--tls_ca and --server_host_override need --use_tls=true')
    if args.use_tls and not args.tls_ca:
        parser.error('--use_tls=true needs --tls_ca')

    names = CASE_NAMES if args.test_case == 'all' else (args.test_case,)
    target = '%s:%d' % (args.server_host, args.server_port)
    # No proxy may stand between the client and the server under test.
    options = [('grpc.enable_http_proxy', 0)]
    if args.use_tls:
        try:
            with open(args.tls_ca, 'rb') as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        except OSError as e:
            parser.error('--tls_ca: %s' % e)
        if args.server_host_override:
            options.append(('grpc.ssl_target_name_override', args.server_host_override))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    with channel:
        cases = Cases(channel, args.rpc_timeout_s)
        results = [run_case(cases, name) for name in names]
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())

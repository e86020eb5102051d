#!/usr/bin/python3
"""A python3-grpcio client that runs the Echo test battery against a trellis.testing.Echo server.

Checks: success (with and without a deadline), each status code 1..16 with message and binary
details (grpcio exposes details only as the grpc-status-details-bin trailer), metadata both ways
(text and -bin), deadline exceeded, unknown method and unknown service -> UNIMPLEMENTED, a
throwing handler (INTERNAL from Trellis; pass --throw-code UNKNOWN for a grpcio server) after
which the server still serves, and 1,000 concurrent calls via futures on one channel.

Prints one line per check ("PASS name" / "FAIL name: why") and a final "N passed, M failed";
exits 1 if any check failed. Every call has a deadline, so the battery always ends.

The messages come from `protoc --python_out` (grpc_tools is not packaged in Debian 12), so the
stubs are built by hand; put the generated modules on PYTHONPATH.

With --only-deadline it runs the deadline-exceeded check alone, with the deadline of
--deadline-ms (default 50): a test that must see the deadline pass inside the server's handler
repeats it with a longer deadline until the call has reached the handler.

Usage: echo_client.py --target HOST:PORT [--throw-code INTERNAL] [--deadline-ms 50]
                      [--only-deadline]
"""

import argparse
import sys
import traceback

import grpc

from trellis.testing import echo_pb2

ECHO = '/trellis.testing.Echo/Echo'
CODES = {code.value[0]: code for code in grpc.StatusCode}
TIMEOUT_S = 30  # the bound of every call that is expected to finish
BINARY = b'\x00\xff\x10 bytes'


class CheckFailed(Exception):
    pass


def expect(condition, why):
    if not condition:
        raise CheckFailed(why)


def expect_eq(actual, expected, what):
    expect(actual == expected, '%s: expected %r, got %r' % (what, expected, actual))


def unary(channel, path):
    return channel.unary_unary(path,
                               request_serializer=echo_pb2.EchoRequest.SerializeToString,
                               response_deserializer=echo_pb2.EchoResponse.FromString)


def expect_error(fn, code):
    """Calls fn(), which must fail with `code`; returns the grpc.RpcError."""
    try:
        response = fn()
    except grpc.RpcError as error:
        expect_eq(error.code(), code, 'status code (details %r)' % error.details())
        return error
    raise CheckFailed('expected %s, the call succeeded with %r' % (code, response))


class Battery:

    def __init__(self, channel, throw_code, deadline_s):
        self.echo = unary(channel, ECHO)
        self.channel = channel
        self.throw_code = throw_code
        self.deadline_s = deadline_s
        self.passed = 0
        self.failed = 0

    def check(self, name, fn):
        try:
            fn()
        except CheckFailed as failure:
            self.failed += 1
            print('FAIL %s: %s' % (name, failure), flush=True)
        except Exception:  # pylint: disable=broad-except
            self.failed += 1
            print('FAIL %s: unexpected exception\n%s' % (name, traceback.format_exc()), flush=True)
        else:
            self.passed += 1
            print('PASS %s' % name, flush=True)

    def success(self):
        response = self.echo(echo_pb2.EchoRequest(message='hello'), timeout=TIMEOUT_S)
        expect_eq(response.message, 'hello', 'message')
        expect(0 < response.remaining_deadline_ms <= (TIMEOUT_S + 1) * 1000,
               'remaining_deadline_ms %d not within the %d s deadline' %
               (response.remaining_deadline_ms, TIMEOUT_S))
        expect('127.0.0.1' in response.peer, 'peer %r does not name 127.0.0.1' % response.peer)

    def success_without_deadline(self):
        # No grpc-timeout at all; the parent process bounds this call by killing us.
        response = self.echo(echo_pb2.EchoRequest(message='no deadline'))
        expect_eq(response.message, 'no deadline', 'message')
        expect_eq(response.remaining_deadline_ms, -1, 'remaining_deadline_ms')

    def status_code(self, code):
        details = bytes([0, 1, 0xfe, code])
        request = echo_pb2.EchoRequest(status_code=code,
                                       status_message='message for %d' % code,
                                       status_details=details)
        error = expect_error(lambda: self.echo(request, timeout=TIMEOUT_S), CODES[code])
        expect_eq(error.details(), request.status_message, 'status message')
        trailing = dict(error.trailing_metadata() or ())
        expect_eq(trailing.get('grpc-status-details-bin'), details, 'grpc-status-details-bin')

    def metadata(self):
        request = echo_pb2.EchoRequest(message='md', echo_metadata=True)
        response, call = self.echo.with_call(request,
                                             timeout=TIMEOUT_S,
                                             metadata=(('echo-text', 'plain value'),
                                                       ('echo-data-bin', BINARY),
                                                       ('not-echoed', 'x')))
        expect_eq(response.message, 'md', 'message')
        for where, md in (('initial', call.initial_metadata()), ('trailing',
                                                                 call.trailing_metadata())):
            md = dict(md or ())
            expect_eq(md.get('echo-text'), 'plain value', where + ' echo-text')
            expect_eq(md.get('echo-data-bin'), BINARY, where + ' echo-data-bin')
            expect('not-echoed' not in md, where + ' metadata has a key that is not echo-')

    def metadata_with_error(self):
        request = echo_pb2.EchoRequest(echo_metadata=True,
                                       status_code=5,
                                       status_message='gone',
                                       status_details=b'\x01\x02')
        error = expect_error(
            lambda: self.echo(request,
                              timeout=TIMEOUT_S,
                              metadata=(('echo-text', 'on error'), ('echo-data-bin', BINARY))),
            grpc.StatusCode.NOT_FOUND)
        trailing = dict(error.trailing_metadata() or ())
        expect_eq(trailing.get('echo-text'), 'on error', 'trailing echo-text')
        expect_eq(trailing.get('echo-data-bin'), BINARY, 'trailing echo-data-bin')
        expect_eq(trailing.get('grpc-status-details-bin'), b'\x01\x02', 'grpc-status-details-bin')

    def deadline_exceeded(self):
        request = echo_pb2.EchoRequest(message='slow', delay_ms=60000)
        expect_error(lambda: self.echo(request, timeout=self.deadline_s),
                     grpc.StatusCode.DEADLINE_EXCEEDED)

    def unknown(self, path):
        method = unary(self.channel, path)
        expect_error(lambda: method(echo_pb2.EchoRequest(message='x'), timeout=TIMEOUT_S),
                     grpc.StatusCode.UNIMPLEMENTED)

    def throwing_handler(self):
        expect_error(
            lambda: self.echo(echo_pb2.EchoRequest(throw_exception=True), timeout=TIMEOUT_S),
            self.throw_code)
        response = self.echo(echo_pb2.EchoRequest(message='still here'), timeout=TIMEOUT_S)
        expect_eq(response.message, 'still here', 'message after the throwing handler')

    def concurrent(self, count):
        pending = [
            self.echo.future(echo_pb2.EchoRequest(message=str(i)), timeout=TIMEOUT_S)
            for i in range(count)
        ]
        wrong = []
        for i, future in enumerate(pending):
            try:
                if future.result().message != str(i):
                    wrong.append('%d: wrong message' % i)
            except grpc.RpcError as error:
                wrong.append('%d: %s %s' % (i, error.code(), error.details()))
        expect(not wrong, '%d of %d calls failed, first: %s' % (len(wrong), count, wrong[:3]))

    def summary(self):
        print('%d passed, %d failed' % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0

    def run_deadline_only(self):
        self.check('deadline exceeded', self.deadline_exceeded)
        return self.summary()

    def run(self):
        self.check('success', self.success)
        self.check('success without deadline', self.success_without_deadline)
        for code in range(1, 17):
            self.check('status %d %s with message and details' % (code, CODES[code].name),
                       lambda code=code: self.status_code(code))
        self.check('metadata text and -bin both ways', self.metadata)
        self.check('metadata and details on an error', self.metadata_with_error)
        self.check('deadline exceeded', self.deadline_exceeded)
        self.check('unknown method is UNIMPLEMENTED',
                   lambda: self.unknown('/trellis.testing.Echo/Nope'))
        self.check('unknown service is UNIMPLEMENTED', lambda: self.unknown('/no.Such/Echo'))
        self.check('throwing handler is %s and the server lives' % self.throw_code.name,
                   self.throwing_handler)
        self.check('1000 concurrent calls on one channel', lambda: self.concurrent(1000))
        return self.summary()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--target', required=True, help='HOST:PORT of the server')
    parser.add_argument('--throw-code',
                        default='INTERNAL',
                        choices=[code.name for code in grpc.StatusCode],
                        help='the status a throwing handler yields (grpcio servers: UNKNOWN)')
    parser.add_argument('--deadline-ms',
                        type=int,
                        default=50,
                        help='the deadline of the deadline-exceeded check')
    parser.add_argument('--only-deadline',
                        action='store_true',
                        help='run the deadline-exceeded check alone')
    args = parser.parse_args()
    # No proxy may stand between the battery and the server under test.
    with grpc.insecure_channel(args.target, options=[('grpc.enable_http_proxy', 0)]) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
        battery = Battery(channel, grpc.StatusCode[args.throw_code], args.deadline_ms / 1000.0)
        return battery.run_deadline_only() if args.only_deadline else battery.run()


if __name__ == '__main__':
    sys.exit(main())

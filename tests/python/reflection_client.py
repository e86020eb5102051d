#!/usr/bin/python3
"""A python3-grpcio client of server reflection, grpc.reflection.v1 or v1alpha ServerReflection.

On one ServerReflectionInfo stream it lists the services, asks for the file of the echo service
and sends four requests that must fail; then it builds the echo service's types from the file it
received alone (no generated echo_pb2) and calls trellis.testing.Echo/Echo with them. One line
per answer:

    services: NAME NAME ...                 (in the order the server sent them)
    file trellis.testing.Echo: FILE FILE ...
    methods trellis.testing.Echo: Echo IdempotentEcho
    error REQUEST: CODE                     (an error_response; CODE is the grpc code's name)
    call Echo: MESSAGE                      (the reflected call's response message)

The messages come from `protoc --python_out` on Debian's grpc-proto (grpc_tools and
grpcio-reflection are not packaged in Debian 12), so the stubs are built by hand. Their package,
grpc.reflection, would be looked up inside grpcio's own `grpc` package, so the generated modules
are loaded from their files, found on PYTHONPATH. Every call has a deadline, so the client
always ends.

Usage: reflection_client.py --target HOST:PORT --version v1|v1alpha
"""

import argparse
import importlib.util
import os
import sys

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory

TIMEOUT_S = 60  # the bound of every call
CODES = {code.value[0]: code for code in grpc.StatusCode}
ECHO = 'trellis.testing.Echo'


def load_reflection_pb2(version):
    relative = os.path.join('grpc', 'reflection', version, 'reflection_pb2.py')
    for directory in sys.path:
        path = os.path.join(directory, relative)
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location('reflection_%s_pb2' % version, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    sys.exit('no %s on PYTHONPATH' % relative)


def message_class(pool, full_name):
    descriptor = pool.FindMessageTypeByName(full_name)
    if hasattr(message_factory, 'GetMessageClass'):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--target', required=True)
    parser.add_argument('--version', required=True, choices=['v1', 'v1alpha'])
    args = parser.parse_args()
    pb2 = load_reflection_pb2(args.version)
    Request = pb2.ServerReflectionRequest

    requests = [
        Request(list_services=''),
        Request(file_containing_symbol=ECHO),
        Request(file_by_filename='no/such.proto'),
        Request(file_containing_symbol='no.such.Symbol'),
        Request(file_containing_extension=pb2.ExtensionRequest(containing_type='no.such.Message',
                                                               extension_number=5)),
        Request(all_extension_numbers_of_type='no.such.Message'),
    ]
    pool = descriptor_pool.DescriptorPool()
    with grpc.insecure_channel(args.target) as channel:
        info = channel.stream_stream(
            '/grpc.reflection.%s.ServerReflection/ServerReflectionInfo' % args.version,
            request_serializer=Request.SerializeToString,
            response_deserializer=pb2.ServerReflectionResponse.FromString)
        responses = list(info(iter(requests), timeout=TIMEOUT_S))
        if len(responses) != len(requests):
            sys.exit('%d responses to %d requests' % (len(responses), len(requests)))
        for request, response in zip(requests, responses):
            kind = response.WhichOneof('message_response')
            if kind == 'list_services_response':
                names = [s.name for s in response.list_services_response.service]
                print('services: ' + ' '.join(names))
            elif kind == 'file_descriptor_response':
                files = []
                for data in response.file_descriptor_response.file_descriptor_proto:
                    files.append(descriptor_pb2.FileDescriptorProto.FromString(data))
                # Dependencies before their dependents, as the pool needs them.
                for f in reversed(files):
                    pool.AddSerializedFile(f.SerializeToString())
                print('file %s: %s' % (request.file_containing_symbol,
                                       ' '.join(f.name for f in files)))
            elif kind == 'error_response':
                what = request.WhichOneof('message_request')
                print('error %s: %s' % (what, CODES[response.error_response.error_code].name))
            else:
                print('unexpected answer: %s' % response)

        service = pool.FindServiceByName(ECHO)
        print('methods %s: %s' % (ECHO, ' '.join(m.name for m in service.methods)))
        method = service.methods_by_name['Echo']
        EchoRequest = message_class(pool, method.input_type.full_name)
        EchoResponse = message_class(pool, method.output_type.full_name)
        echo = channel.unary_unary('/%s/Echo' % ECHO,
                                   request_serializer=EchoRequest.SerializeToString,
                                   response_deserializer=EchoResponse.FromString)
        response = echo(EchoRequest(message='hi from python'), timeout=TIMEOUT_S)
        print('call Echo: %s' % response.message)
    return 0


if __name__ == '__main__':
    sys.exit(main())

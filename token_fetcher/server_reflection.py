"""Server reflection under v1alpha (grpcurl 1.8) and v1 (buf curl): the messages are the
same, so one servicer answers both."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = ["REFLECTION_V1", "add_reflection"]

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _describe_reflection_v1() -> None:
    """Put grpc.reflection.v1 in the descriptor pool, so that the service listed under that
    name can be described too (``grpcurl describe`` stops at the first service it cannot
    resolve): its file is v1alpha's, the package renamed."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's: deprecated, with v1alpha package names
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())


def add_reflection(server: grpc.Server, service_names: list[str]) -> None:
    """Reflection under v1alpha (grpcurl 1.8) and v1 (buf curl): the messages are the same."""
    _describe_reflection_v1()
    servicer = reflection.ReflectionServicer(service_names)
    for name in (reflection.SERVICE_NAME, REFLECTION_V1):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),))

"""Print a gRPC module's wire contract as JSON: every message field, enum value and rpc.

Runs under either interpreter: `python dump_descriptor.py fedn.network.grpc.fedn_pb2` in FEDn
0.9.5's venv, or with `fedplane.proto.fedn_pb2` in ours.
"""

import importlib
import json
import sys


def describe_enum(enum) -> dict:
    return {value.name: value.number for value in enum.values}


def is_repeated(field) -> bool:
    # protobuf 7 dropped `label` for `is_repeated`; 4.x (FEDn 0.9.5's) has only `label`.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == field.LABEL_REPEATED


def describe(module_name: str) -> dict:
    descriptor = importlib.import_module(module_name).DESCRIPTOR
    messages: dict = {}
    enums = {name: describe_enum(enum) for name, enum in descriptor.enum_types_by_name.items()}

    def walk(message, prefix: str = "") -> None:
        name = prefix + message.name
        messages[name] = {
            field.name: {
                "number": field.number,
                "type": field.type,
                "repeated": is_repeated(field),
                "message_type": field.message_type.full_name if field.message_type else None,
                "enum_type": field.enum_type.full_name if field.enum_type else None,
            }
            for field in message.fields
        }
        for enum in message.enum_types:
            enums[f"{name}.{enum.name}"] = describe_enum(enum)
        for nested in message.nested_types:
            walk(nested, f"{name}.")

    for message in descriptor.message_types_by_name.values():
        walk(message)
    services = {
        service.name: {
            method.name: {
                "input": method.input_type.full_name,
                "output": method.output_type.full_name,
                "client_streaming": method.client_streaming,
                "server_streaming": method.server_streaming,
            }
            for method in service.methods
        }
        for service in descriptor.services_by_name.values()
    }
    return {"package": descriptor.package, "messages": messages, "enums": enums, "services": services}


if __name__ == "__main__":
    json.dump(describe(sys.argv[1]), sys.stdout, indent=1, sort_keys=True)

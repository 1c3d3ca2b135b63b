import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG: _ClassVar[StatusType]
    MODEL_UPDATE_REQUEST: _ClassVar[StatusType]
    MODEL_UPDATE: _ClassVar[StatusType]
    MODEL_VALIDATION_REQUEST: _ClassVar[StatusType]
    MODEL_VALIDATION: _ClassVar[StatusType]
    INFERENCE: _ClassVar[StatusType]

class Queue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEFAULT: _ClassVar[Queue]
    TASK_QUEUE: _ClassVar[Queue]

class ModelStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[ModelStatus]
    IN_PROGRESS: _ClassVar[ModelStatus]
    IN_PROGRESS_OK: _ClassVar[ModelStatus]
    FAILED: _ClassVar[ModelStatus]
    UNKNOWN: _ClassVar[ModelStatus]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER: _ClassVar[Role]
    COMBINER: _ClassVar[Role]
    REDUCER: _ClassVar[Role]
    OTHER: _ClassVar[Role]

class Command(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDLE: _ClassVar[Command]
    START: _ClassVar[Command]
    PAUSE: _ClassVar[Command]
    STOP: _ClassVar[Command]
    RESET: _ClassVar[Command]
    REPORT: _ClassVar[Command]

class ConnectionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOT_ACCEPTING: _ClassVar[ConnectionStatus]
    ACCEPTING: _ClassVar[ConnectionStatus]
    TRY_AGAIN_LATER: _ClassVar[ConnectionStatus]
LOG: StatusType
MODEL_UPDATE_REQUEST: StatusType
MODEL_UPDATE: StatusType
MODEL_VALIDATION_REQUEST: StatusType
MODEL_VALIDATION: StatusType
INFERENCE: StatusType
DEFAULT: Queue
TASK_QUEUE: Queue
OK: ModelStatus
IN_PROGRESS: ModelStatus
IN_PROGRESS_OK: ModelStatus
FAILED: ModelStatus
UNKNOWN: ModelStatus
WORKER: Role
COMBINER: Role
REDUCER: Role
OTHER: Role
IDLE: Command
START: Command
PAUSE: Command
STOP: Command
RESET: Command
REPORT: Command
NOT_ACCEPTING: ConnectionStatus
ACCEPTING: ConnectionStatus
TRY_AGAIN_LATER: ConnectionStatus

class Response(_message.Message):
    __slots__ = ("sender", "response")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    response: str
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., response: _Optional[str] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("sender", "status", "log_level", "data", "correlation_id", "timestamp", "type", "extra", "session_id")
    class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INFO: _ClassVar[Status.LogLevel]
        DEBUG: _ClassVar[Status.LogLevel]
        WARNING: _ClassVar[Status.LogLevel]
        ERROR: _ClassVar[Status.LogLevel]
        AUDIT: _ClassVar[Status.LogLevel]
    INFO: Status.LogLevel
    DEBUG: Status.LogLevel
    WARNING: Status.LogLevel
    ERROR: Status.LogLevel
    AUDIT: Status.LogLevel
    SENDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOG_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    status: str
    log_level: Status.LogLevel
    data: str
    correlation_id: str
    timestamp: _timestamp_pb2.Timestamp
    type: StatusType
    extra: str
    session_id: str
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., status: _Optional[str] = ..., log_level: _Optional[_Union[Status.LogLevel, str]] = ..., data: _Optional[str] = ..., correlation_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[_Union[StatusType, str]] = ..., extra: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("sender", "receiver", "model_id", "data", "correlation_id", "timestamp", "meta", "session_id", "type")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    receiver: Client
    model_id: str
    data: str
    correlation_id: str
    timestamp: str
    meta: str
    session_id: str
    type: StatusType
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., receiver: _Optional[_Union[Client, _Mapping]] = ..., model_id: _Optional[str] = ..., data: _Optional[str] = ..., correlation_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., meta: _Optional[str] = ..., session_id: _Optional[str] = ..., type: _Optional[_Union[StatusType, str]] = ...) -> None: ...

class ModelUpdate(_message.Message):
    __slots__ = ("sender", "receiver", "model_id", "model_update_id", "correlation_id", "timestamp", "meta", "config")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    receiver: Client
    model_id: str
    model_update_id: str
    correlation_id: str
    timestamp: str
    meta: str
    config: str
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., receiver: _Optional[_Union[Client, _Mapping]] = ..., model_id: _Optional[str] = ..., model_update_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., meta: _Optional[str] = ..., config: _Optional[str] = ...) -> None: ...

class ModelValidation(_message.Message):
    __slots__ = ("sender", "receiver", "model_id", "data", "correlation_id", "timestamp", "meta", "session_id")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    receiver: Client
    model_id: str
    data: str
    correlation_id: str
    timestamp: _timestamp_pb2.Timestamp
    meta: str
    session_id: str
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., receiver: _Optional[_Union[Client, _Mapping]] = ..., model_id: _Optional[str] = ..., data: _Optional[str] = ..., correlation_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., meta: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("sender", "receiver", "data", "id", "status")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    receiver: Client
    data: bytes
    id: str
    status: ModelStatus
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., receiver: _Optional[_Union[Client, _Mapping]] = ..., data: _Optional[bytes] = ..., id: _Optional[str] = ..., status: _Optional[_Union[ModelStatus, str]] = ...) -> None: ...

class ModelResponse(_message.Message):
    __slots__ = ("data", "id", "status", "message")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    id: str
    status: ModelStatus
    message: str
    def __init__(self, data: _Optional[bytes] = ..., id: _Optional[str] = ..., status: _Optional[_Union[ModelStatus, str]] = ..., message: _Optional[str] = ...) -> None: ...

class GetGlobalModelRequest(_message.Message):
    __slots__ = ("sender", "receiver")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    receiver: Client
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., receiver: _Optional[_Union[Client, _Mapping]] = ...) -> None: ...

class GetGlobalModelResponse(_message.Message):
    __slots__ = ("sender", "receiver", "model_id")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    receiver: Client
    model_id: str
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., receiver: _Optional[_Union[Client, _Mapping]] = ..., model_id: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sender",)
    SENDER_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ...) -> None: ...

class ClientAvailableMessage(_message.Message):
    __slots__ = ("sender", "data", "timestamp")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    data: str
    timestamp: str
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., data: _Optional[str] = ..., timestamp: _Optional[str] = ...) -> None: ...

class ListClientsRequest(_message.Message):
    __slots__ = ("sender", "channel")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    channel: Queue
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., channel: _Optional[_Union[Queue, str]] = ...) -> None: ...

class ClientList(_message.Message):
    __slots__ = ("client",)
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    client: _containers.RepeatedCompositeFieldContainer[Client]
    def __init__(self, client: _Optional[_Iterable[_Union[Client, _Mapping]]] = ...) -> None: ...

class Client(_message.Message):
    __slots__ = ("role", "name")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    role: Role
    name: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., name: _Optional[str] = ...) -> None: ...

class ReassignRequest(_message.Message):
    __slots__ = ("sender", "receiver", "server", "port")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    receiver: Client
    server: str
    port: int
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., receiver: _Optional[_Union[Client, _Mapping]] = ..., server: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class ReconnectRequest(_message.Message):
    __slots__ = ("sender", "receiver", "reconnect")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    sender: Client
    receiver: Client
    reconnect: int
    def __init__(self, sender: _Optional[_Union[Client, _Mapping]] = ..., receiver: _Optional[_Union[Client, _Mapping]] = ..., reconnect: _Optional[int] = ...) -> None: ...

class Parameter(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ControlRequest(_message.Message):
    __slots__ = ("command", "parameter")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_FIELD_NUMBER: _ClassVar[int]
    command: Command
    parameter: _containers.RepeatedCompositeFieldContainer[Parameter]
    def __init__(self, command: _Optional[_Union[Command, str]] = ..., parameter: _Optional[_Iterable[_Union[Parameter, _Mapping]]] = ...) -> None: ...

class ControlResponse(_message.Message):
    __slots__ = ("message", "parameter")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_FIELD_NUMBER: _ClassVar[int]
    message: str
    parameter: _containers.RepeatedCompositeFieldContainer[Parameter]
    def __init__(self, message: _Optional[str] = ..., parameter: _Optional[_Iterable[_Union[Parameter, _Mapping]]] = ...) -> None: ...

class ConnectionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConnectionResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: ConnectionStatus
    def __init__(self, status: _Optional[_Union[ConnectionStatus, str]] = ...) -> None: ...

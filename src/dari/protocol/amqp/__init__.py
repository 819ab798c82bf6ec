"""Sans-IO AMQP 0-9-1 (RabbitMQ dialect): bytes in, events out; replies in, bytes out.

``AMQPConnection`` is the server side of one connection: ``receive_data`` the socket bytes,
drain ``next_event`` (``ProtocolHeaderReceived``, ``BadProtocolHeader``, ``MethodReceived``,
``ContentReceived``, ``HeartbeatReceived``), answer with its ``send_*`` methods, and on an
``AMQPError`` write ``send_error(exc)``. The per-message methods (publish, deliver, get-ok,
return, ack, nack, reject) use the struct codecs of ``fastpath``; all others are pamqp command
objects (``commands``) encoded by ``methods``. Field tables keep their wire types (``table``).
"""

from pamqp import commands

from dari.protocol.amqp.connection import (
    CHANNEL_TRANSITIONS,
    CONNECTION_TRANSITIONS,
    DEFAULT_CHANNEL_MAX,
    DEFAULT_FRAME_MAX,
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_MESSAGE_SIZE,
    AMQPConnection,
    ChannelState,
    ConnectionState,
    default_server_properties,
)
from dari.protocol.amqp.errors import AMQPError, FrameError, LocalProtocolError, ReplyCode
from dari.protocol.amqp.events import (
    BadProtocolHeader,
    ContentReceived,
    Event,
    HeartbeatReceived,
    MethodReceived,
    ProtocolHeaderReceived,
)
from dari.protocol.amqp.fastpath import (
    Ack,
    ContentHeader,
    DeliverEncoder,
    Nack,
    Properties,
    Publish,
    Reject,
    encode_ack,
    encode_content_header,
    encode_deliver,
    encode_get_ok,
    encode_nack,
    encode_properties,
    encode_return,
)
from dari.protocol.amqp.framing import (
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    Frame,
    FrameReader,
    encode_frame,
)
from dari.protocol.amqp.methods import decode_method, encode_method, method_payload
from dari.protocol.amqp.table import (
    Field,
    Table,
    decode_table,
    decode_table_typed,
    encode_table,
    type_class,
)

__all__ = [
    "CHANNEL_TRANSITIONS",
    "CONNECTION_TRANSITIONS",
    "DEFAULT_CHANNEL_MAX",
    "DEFAULT_FRAME_MAX",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HEARTBEAT_FRAME",
    "PROTOCOL_HEADER",
    "AMQPConnection",
    "AMQPError",
    "Ack",
    "BadProtocolHeader",
    "ChannelState",
    "ConnectionState",
    "ContentHeader",
    "ContentReceived",
    "DeliverEncoder",
    "Event",
    "Field",
    "Frame",
    "FrameError",
    "FrameReader",
    "HeartbeatReceived",
    "LocalProtocolError",
    "MethodReceived",
    "Nack",
    "Properties",
    "ProtocolHeaderReceived",
    "Publish",
    "Reject",
    "ReplyCode",
    "Table",
    "commands",
    "decode_method",
    "decode_table",
    "decode_table_typed",
    "default_server_properties",
    "encode_ack",
    "encode_content_header",
    "encode_deliver",
    "encode_frame",
    "encode_get_ok",
    "encode_method",
    "encode_nack",
    "encode_properties",
    "encode_return",
    "encode_table",
    "method_payload",
    "type_class",
]

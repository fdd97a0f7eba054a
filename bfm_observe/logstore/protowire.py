"""A hand-written protobuf wire reader and writer, just enough for Loki's PushRequest.

Reading yields each field of one message as (field number, wire type, value) and skips
groups; whatever is malformed raises ``PushError`` naming ``where`` and the byte offset.
Writing builds varint and length-delimited fields. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeGuard

from bfm_observe.logstore.wire_errors import PushError


def is_bytes(value: int | bytes, wire: int, where: str) -> TypeGuard[bytes]:
    if wire != 2 or not isinstance(value, bytes):
        raise PushError(f"{where}: wrong protobuf wire type {wire} (expected 2, length-delimited)")
    return True


def is_int(value: int | bytes, wire: int, where: str) -> TypeGuard[int]:
    if wire != 0 or not isinstance(value, int):
        raise PushError(f"{where}: wrong protobuf wire type {wire} (expected 0, varint)")
    return True


def signed(value: int) -> int:
    return value - 2**64 if value >= 2**63 else value


def varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while pos < len(buf) and shift < 64:
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            if result >= 2**64:
                break
            return result, pos
        shift += 7
    raise PushError(f"{where}: truncated or overlong protobuf varint at byte {pos}")


def fields(buf: bytes, where: str) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of one message; skips groups (wire types 3/4)."""
    pos, end, groups = 0, len(buf), []
    while pos < end:
        key = buf[pos]  # one-byte varints inline: the common case, and twice as fast
        key, pos = (key, pos + 1) if key < 0x80 else varint(buf, pos, where)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if field == 0 or wire in (6, 7):
            raise PushError(f"{where}: invalid protobuf field key {key} at byte {pos}")
        if wire == 0:
            value, pos = varint(buf, pos, where)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        elif wire == 2:
            size = buf[pos] if pos < end else 0x80
            size, pos = (size, pos + 1) if size < 0x80 else varint(buf, pos, where)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 3:
            groups.append(field)
            continue
        elif groups and groups[-1] == field:  # wire 4 closes the innermost open group
            groups.pop()
            continue
        else:
            raise PushError(f"{where}: unbalanced protobuf end-group for field {field}")
        if pos > end:
            raise PushError(f"{where}: protobuf field {field} runs past the end of its message")
        if not groups:
            yield field, wire, value
    if groups:
        raise PushError(f"{where}: protobuf group for field {groups[-1]} is never closed")


def varint_bytes(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    value &= 2**64 - 1  # negative int64 values take ten bytes, two's complement
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def varint_field(field: int, value: int) -> bytes:
    return varint_bytes(field << 3) + varint_bytes(value) if value else b""


def bytes_field(field: int, payload: bytes) -> bytes:
    return varint_bytes(field << 3 | 2) + varint_bytes(len(payload)) + payload

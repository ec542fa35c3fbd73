"""Plugin params from the protobuf ``Struct`` a request carries, as plain dicts.

A ``Struct`` can hold numbers JSON has no form for (NaN, Infinity), which
``json_format.MessageToDict`` refuses with a ValueError; every service reads plugin params
through :func:`struct_params` so such a request is an INVALID_ARGUMENT naming its field,
never an internal error.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import FieldViolation, InvalidArgument


def struct_params(struct: Struct, field: str, *, reason: str | None = None) -> dict[str, Any]:
    """``struct`` as a dict; :class:`InvalidArgument` naming ``field`` when it cannot be one."""
    try:
        return json_format.MessageToDict(struct)
    except (json_format.SerializeToJsonError, ValueError) as exc:  # NaN, Infinity: not JSON
        raise InvalidArgument(
            f"{field}: {exc}", reason=reason, field_violations=[FieldViolation(field, str(exc))]
        ) from None


def plugin_params(
    ref: common_pb2.PluginRef, field: str, *, reason: str | None = None
) -> dict[str, Any]:
    """A plugin reference's params (``{}`` when it has none); ``field`` names them."""
    return struct_params(ref.params, field, reason=reason) if ref.HasField("params") else {}

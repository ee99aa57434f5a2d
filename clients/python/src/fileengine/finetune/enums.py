"""The service's enums with short names: `JobState.SUCCEEDED` for `JOB_STATE_SUCCEEDED`.

Each is an IntEnum whose members equal the wire values, made at import from the generated
descriptors, so a value added to the protos is here once the code is regenerated. The prefixed
names of 0.1.0 (`JobState.JOB_STATE_SUCCEEDED`) stay as aliases of the same members, and
`Name()` / `Value()` of the generated enum wrappers as deprecated class methods, until 0.3.0.

Type checkers read enums.pyi instead, which declares the members as the generated enum's value
type, so that they compare with and can be assigned to the generated messages' fields;
tests/test_api_shape.py fails when it lacks a value of the protos.
"""

from __future__ import annotations

import enum
import warnings
from typing import Any

from google.protobuf.descriptor import EnumDescriptor

from .v1 import completion_pb2, dataset_pb2, job_pb2

__all__ = [
    "ChatRole",
    "DatasetFormat",
    "FinishReason",
    "JobEventKind",
    "JobState",
    "Provider",
    "Rating",
    "Severity",
    "TrainingMethod",
]


def _name(cls: type[enum.IntEnum], value: int) -> str:
    warnings.warn(
        f"{cls.__name__}.Name(x) is deprecated: use {cls.__name__}(x).name",
        DeprecationWarning,
        stacklevel=2,
    )
    return cls(value).name


def _value(cls: type[enum.IntEnum], name: str) -> int:
    warnings.warn(
        f"{cls.__name__}.Value(name) is deprecated: use {cls.__name__}[name]",
        DeprecationWarning,
        stacklevel=2,
    )
    return int(cls[name])


def _short_enum(descriptor: EnumDescriptor) -> Any:
    """The IntEnum of a generated enum: short names first (so they are the canonical `.name`),
    then the prefixed ones as aliases."""
    prefix = descriptor.values[0].name.removesuffix("UNSPECIFIED")
    members = [(v.name.removeprefix(prefix), v.number) for v in descriptor.values]
    members += [(v.name, v.number) for v in descriptor.values]
    cls = enum.IntEnum(descriptor.name, members, module=__name__, qualname=descriptor.name)
    # What annotations of 0.1.0 name (`JobState.ValueType`): ints, as in the generated code.
    cls.ValueType = int
    cls.Name = classmethod(_name)
    cls.Value = classmethod(_value)
    return cls


JobState = _short_enum(job_pb2.DESCRIPTOR.enum_types_by_name["JobState"])
JobEventKind = _short_enum(job_pb2.DESCRIPTOR.enum_types_by_name["JobEventKind"])
TrainingMethod = _short_enum(job_pb2.DESCRIPTOR.enum_types_by_name["TrainingMethod"])
FinishReason = _short_enum(completion_pb2.DESCRIPTOR.enum_types_by_name["FinishReason"])
ChatRole = _short_enum(completion_pb2.DESCRIPTOR.enum_types_by_name["ChatRole"])
Rating = _short_enum(completion_pb2.DESCRIPTOR.enum_types_by_name["Rating"])
Provider = _short_enum(completion_pb2.DESCRIPTOR.enum_types_by_name["Provider"])
Severity = _short_enum(dataset_pb2.DESCRIPTOR.enum_types_by_name["Severity"])
DatasetFormat = _short_enum(dataset_pb2.DESCRIPTOR.enum_types_by_name["DatasetFormat"])

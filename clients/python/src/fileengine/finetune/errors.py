"""FineTuneError: a failed call, with the service's google.rpc error details decoded.

The server sends a google.rpc.Status in the `grpc-status-details-bin` trailer. Its details may
hold an ErrorInfo (domain `finetune.fileengine`, an UPPER_SNAKE `reason` to branch on), a
BadRequest (which request fields are wrong), a PreconditionFailure (for example every error of
a refused dataset, subject `training:LINE`) and a RetryInfo (how long to wait).
"""

from __future__ import annotations

import datetime
import warnings
from dataclasses import dataclass
from typing import Any, TypeVar

import google.rpc.error_details_pb2 as error_details_pb2
import grpc
from google.protobuf import any_pb2
from grpc_status import rpc_status

__all__ = ["DOMAIN", "FieldViolation", "FineTuneError", "PreconditionViolation"]

DOMAIN = "finetune.fileengine"
"""The ErrorInfo domain of errors raised by the FineTune service."""


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field, from google.rpc.BadRequest."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition, from google.rpc.PreconditionFailure.

    For a refused dataset: `type` is the problem code (such as `invalid_json`) and `subject`
    is `training:LINE` or `validation:LINE` (line 0: the whole dataset).
    """

    type: str
    subject: str
    description: str


class FineTuneError(Exception):
    """A call to the FineTune service failed.

    Attributes:
        code: the gRPC status code (`grpc.StatusCode`); `code_name` is its name.
        message: the server's message.
        reason: ErrorInfo.reason (for example `DATASET_INVALID`, `JOB_NOT_FOUND`), or ""
            when the status carried no ErrorInfo (for example a transport failure).
        domain: ErrorInfo.domain, `finetune.fileengine` for the service's own errors, or "".
        metadata: ErrorInfo.metadata (for example `job_id` with JOB_NOT_FOUND).
        field_violations: BadRequest.field_violations, empty when absent.
        precondition_violations: PreconditionFailure.violations, empty when absent.
        retry_delay: RetryInfo.retry_delay, or None when absent.
        details: every detail of the google.rpc.Status, undecoded.
        request_id: on an error from start_training called without a request id, the one the
            SDK generated: call again with it to get the job the failed call may have made,
            never a second one. "" otherwise (a caller that gave the id has it already).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        precondition_violations: tuple[PreconditionViolation, ...] = (),
        retry_delay: datetime.timedelta | None = None,
        details: tuple[any_pb2.Any, ...] = (),
        request_id: str = "",
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = field_violations
        self.precondition_violations = precondition_violations
        self.retry_delay = retry_delay
        self.details = details
        self.request_id = request_id

    @property
    def code_name(self) -> str:
        """The status code's name, such as `UNAVAILABLE`."""
        return str(self.code.name)

    @property
    def retry_delay_seconds(self) -> float | None:
        """Deprecated: `retry_delay` in seconds, what `retry_delay` was in 0.1.0."""
        warnings.warn(
            "FineTuneError.retry_delay_seconds is deprecated: use retry_delay (a timedelta)",
            DeprecationWarning,
            stacklevel=2,
        )
        return None if self.retry_delay is None else self.retry_delay.total_seconds()

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        # Where a log shows the error, it shows what to retry with.
        request = f" (request_id {self.request_id})" if self.request_id else ""
        return f"{self.code_name}: {self.message}{reason}{request}"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> FineTuneError:
        """Decodes a grpc.RpcError (as raised by grpcio, sync or asyncio) into a FineTuneError."""
        if not isinstance(error, (grpc.Call, grpc.aio.AioRpcError)):
            # grpcio raises Calls; anything else carries no status to decode.
            return cls(grpc.StatusCode.UNKNOWN, str(error))
        code = error.code()
        message = error.details() or ""
        status = _status_of(error)
        if status is None:
            return cls(code, message)
        info: error_details_pb2.ErrorInfo | None = None
        fields: list[FieldViolation] = []
        preconditions: list[PreconditionViolation] = []
        retry_delay: datetime.timedelta | None = None
        for detail in status.details:
            if (m := _unpack(detail, error_details_pb2.ErrorInfo)) is not None:
                info = m
            elif (b := _unpack(detail, error_details_pb2.BadRequest)) is not None:
                fields += [FieldViolation(v.field, v.description) for v in b.field_violations]
            elif (p := _unpack(detail, error_details_pb2.PreconditionFailure)) is not None:
                preconditions += [
                    PreconditionViolation(v.type, v.subject, v.description) for v in p.violations
                ]
            elif (r := _unpack(detail, error_details_pb2.RetryInfo)) is not None:
                retry_delay = r.retry_delay.ToTimedelta()
        return cls(
            code,
            message,
            reason=info.reason if info is not None else "",
            domain=info.domain if info is not None else "",
            metadata=dict(info.metadata) if info is not None else None,
            field_violations=tuple(fields),
            precondition_violations=tuple(preconditions),
            retry_delay=retry_delay,
            details=tuple(status.details),
        )


def _status_of(error: grpc.Call | grpc.aio.AioRpcError) -> Any:
    """The google.rpc.Status of the trailer, or None when absent or inconsistent."""
    try:
        # from_call only calls code(), details() and trailing_metadata(), which asyncio
        # errors have too (synchronous there).
        return rpc_status.from_call(error)
    except ValueError:  # the trailer's status disagrees with the call's: ignore the details
        return None


_M = TypeVar(
    "_M",
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.RetryInfo,
)


def _unpack(detail: any_pb2.Any, kind: type[_M]) -> _M | None:
    message = kind()
    return message if detail.Unpack(message) else None  # Unpack is False for another type

"""Python client for File Engine's FineTune gRPC service (fileengine.finetune.v1).

    from fileengine.finetune import FineTuneClient

    with FineTuneClient("127.0.0.1:50051") as client:
        report = client.validate_dataset("training-data.jsonl")
        job = client.start_training("training-data.jsonl", suffix="file-engine").job
        for event in client.watch_job(job.id):
            print(event.sequence, event.message)

The wrapper returns the generated messages of `fileengine.finetune.v1`; the commonly used ones
are re-exported here. Failed calls raise FineTuneError.
"""

from importlib.metadata import version as _version

from ._shared import TERMINAL_STATES, Dataset, Messages, RetryPolicy
from .aio import AsyncCompletionStream, AsyncFineTuneClient, AsyncJobWatch
from .client import CompletionStream, FineTuneClient, JobWatch
from .errors import DOMAIN, FieldViolation, FineTuneError, PreconditionViolation
from .v1.completion_pb2 import (
    ChatMessage,
    ChatRole,
    Completion,
    FinishReason,
    PromoteModelResponse,
    Rating,
    Tier,
    TierStats,
    Usage,
)
from .v1.dataset_pb2 import DatasetSource, Problem, Severity, ValidationReport
from .v1.job_pb2 import (
    Heartbeat,
    Job,
    JobEvent,
    JobEventKind,
    JobState,
    StartTrainingResponse,
    StepMetrics,
    TrainingMethod,
)

__version__ = _version("fileengine-finetune")
"""The installed distribution's version: clients/VERSION when it was built."""

__all__ = [
    "DOMAIN",
    "TERMINAL_STATES",
    "AsyncCompletionStream",
    "AsyncFineTuneClient",
    "AsyncJobWatch",
    "ChatMessage",
    "ChatRole",
    "Completion",
    "CompletionStream",
    "Dataset",
    "DatasetSource",
    "FieldViolation",
    "FineTuneClient",
    "FineTuneError",
    "FinishReason",
    "Heartbeat",
    "Job",
    "JobEvent",
    "JobEventKind",
    "JobState",
    "JobWatch",
    "Messages",
    "PreconditionViolation",
    "Problem",
    "PromoteModelResponse",
    "Rating",
    "RetryPolicy",
    "Severity",
    "StartTrainingResponse",
    "StepMetrics",
    "Tier",
    "TierStats",
    "TrainingMethod",
    "Usage",
    "ValidationReport",
]

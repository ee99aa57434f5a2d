"""Python client for File Engine's FineTune gRPC service (fileengine.finetune.v1).

    from fileengine.finetune import FineTuneClient

    with FineTuneClient("127.0.0.1:50051") as client:
        report = client.validate_dataset("training-data.jsonl")
        job = client.start_training("training-data.jsonl", suffix="file-engine").job
        for event in client.watch_job(job.id):
            print(event.sequence, event.message)

The wrapper returns the generated messages of `fileengine.finetune.v1`; the commonly used ones
are re-exported here, and the enums with short names (`JobState.SUCCEEDED`). Failed calls
raise FineTuneError.
"""

from importlib.metadata import version as _version

from ._shared import TERMINAL_STATES, Dataset, JobsPage, Messages, RetryPolicy
from .aio import AsyncCompletionStream, AsyncFineTuneClient, AsyncJobWatch
from .client import CompletionStream, FineTuneClient, JobWatch
from .enums import (
    ChatRole,
    DatasetFormat,
    FinishReason,
    JobEventKind,
    JobState,
    Provider,
    Rating,
    Severity,
    TrainingMethod,
)
from .errors import DOMAIN, FieldViolation, FineTuneError, PreconditionViolation
from .v1.completion_pb2 import (
    ChatMessage,
    Completion,
    PromoteModelResponse,
    RecordFeedbackResponse,
    Tier,
    TierStats,
    Usage,
)
from .v1.dataset_pb2 import DatasetSource, Problem, UploadDatasetResponse, ValidationReport
from .v1.job_pb2 import (
    Heartbeat,
    Job,
    JobEvent,
    StartTrainingResponse,
    StepMetrics,
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
    "DatasetFormat",
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
    "JobsPage",
    "Messages",
    "PreconditionViolation",
    "Problem",
    "PromoteModelResponse",
    "Provider",
    "Rating",
    "RecordFeedbackResponse",
    "RetryPolicy",
    "Severity",
    "StartTrainingResponse",
    "StepMetrics",
    "Tier",
    "TierStats",
    "TrainingMethod",
    "UploadDatasetResponse",
    "Usage",
    "ValidationReport",
]

"""What type checkers see of enums.py: each enum's members typed as the generated enum's
value type, so that `job.state == JobState.SUCCEEDED` and `ListJobsRequest(state=...)` check
under mypy --strict (an IntEnum member would be a distinct type that overlaps neither).
At run time they are IntEnum members, which are those ints. Calling the class gives the member
with its `.name`. Keep in step with the protos: tests/test_api_shape.py compares the two."""

from collections.abc import Iterator
from typing import Final, TypeAlias, TypeVar

from typing_extensions import Self, deprecated

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

_E = TypeVar("_E")

class _ShortEnumType(type):
    def __iter__(self: type[_E]) -> Iterator[_E]: ...
    def __len__(self) -> int: ...
    def __getitem__(self: type[_E], name: str) -> _E: ...

class _ShortEnum(int, metaclass=_ShortEnumType):
    def __new__(cls, value: int) -> Self: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    @classmethod
    @deprecated("use Enum(x).name")
    def Name(cls, value: int) -> str: ...
    @classmethod
    @deprecated("use Enum[name]")
    def Value(cls, name: str) -> int: ...

class JobState(_ShortEnum):
    ValueType: TypeAlias = job_pb2.JobState.ValueType
    UNSPECIFIED: Final[job_pb2.JobState.ValueType]
    VALIDATING_FILES: Final[job_pb2.JobState.ValueType]
    QUEUED: Final[job_pb2.JobState.ValueType]
    RUNNING: Final[job_pb2.JobState.ValueType]
    SUCCEEDED: Final[job_pb2.JobState.ValueType]
    FAILED: Final[job_pb2.JobState.ValueType]
    CANCELLED: Final[job_pb2.JobState.ValueType]
    PAUSED: Final[job_pb2.JobState.ValueType]
    # The prefixed names of 0.1.0, deprecated: the same members.
    JOB_STATE_UNSPECIFIED: Final[job_pb2.JobState.ValueType]
    JOB_STATE_VALIDATING_FILES: Final[job_pb2.JobState.ValueType]
    JOB_STATE_QUEUED: Final[job_pb2.JobState.ValueType]
    JOB_STATE_RUNNING: Final[job_pb2.JobState.ValueType]
    JOB_STATE_SUCCEEDED: Final[job_pb2.JobState.ValueType]
    JOB_STATE_FAILED: Final[job_pb2.JobState.ValueType]
    JOB_STATE_CANCELLED: Final[job_pb2.JobState.ValueType]
    JOB_STATE_PAUSED: Final[job_pb2.JobState.ValueType]

class JobEventKind(_ShortEnum):
    ValueType: TypeAlias = job_pb2.JobEventKind.ValueType
    UNSPECIFIED: Final[job_pb2.JobEventKind.ValueType]
    STATE_CHANGED: Final[job_pb2.JobEventKind.ValueType]
    MESSAGE: Final[job_pb2.JobEventKind.ValueType]
    METRICS: Final[job_pb2.JobEventKind.ValueType]
    CHECKPOINT: Final[job_pb2.JobEventKind.ValueType]
    # The prefixed names of 0.1.0, deprecated: the same members.
    JOB_EVENT_KIND_UNSPECIFIED: Final[job_pb2.JobEventKind.ValueType]
    JOB_EVENT_KIND_STATE_CHANGED: Final[job_pb2.JobEventKind.ValueType]
    JOB_EVENT_KIND_MESSAGE: Final[job_pb2.JobEventKind.ValueType]
    JOB_EVENT_KIND_METRICS: Final[job_pb2.JobEventKind.ValueType]
    JOB_EVENT_KIND_CHECKPOINT: Final[job_pb2.JobEventKind.ValueType]

class TrainingMethod(_ShortEnum):
    ValueType: TypeAlias = job_pb2.TrainingMethod.ValueType
    UNSPECIFIED: Final[job_pb2.TrainingMethod.ValueType]
    SUPERVISED: Final[job_pb2.TrainingMethod.ValueType]
    DPO: Final[job_pb2.TrainingMethod.ValueType]
    # The prefixed names of 0.1.0, deprecated: the same members.
    TRAINING_METHOD_UNSPECIFIED: Final[job_pb2.TrainingMethod.ValueType]
    TRAINING_METHOD_SUPERVISED: Final[job_pb2.TrainingMethod.ValueType]
    TRAINING_METHOD_DPO: Final[job_pb2.TrainingMethod.ValueType]

class FinishReason(_ShortEnum):
    ValueType: TypeAlias = completion_pb2.FinishReason.ValueType
    UNSPECIFIED: Final[completion_pb2.FinishReason.ValueType]
    STOP: Final[completion_pb2.FinishReason.ValueType]
    LENGTH: Final[completion_pb2.FinishReason.ValueType]
    CONTENT_FILTER: Final[completion_pb2.FinishReason.ValueType]
    # The prefixed names of 0.1.0, deprecated: the same members.
    FINISH_REASON_UNSPECIFIED: Final[completion_pb2.FinishReason.ValueType]
    FINISH_REASON_STOP: Final[completion_pb2.FinishReason.ValueType]
    FINISH_REASON_LENGTH: Final[completion_pb2.FinishReason.ValueType]
    FINISH_REASON_CONTENT_FILTER: Final[completion_pb2.FinishReason.ValueType]

class ChatRole(_ShortEnum):
    ValueType: TypeAlias = completion_pb2.ChatRole.ValueType
    UNSPECIFIED: Final[completion_pb2.ChatRole.ValueType]
    SYSTEM: Final[completion_pb2.ChatRole.ValueType]
    DEVELOPER: Final[completion_pb2.ChatRole.ValueType]
    USER: Final[completion_pb2.ChatRole.ValueType]
    ASSISTANT: Final[completion_pb2.ChatRole.ValueType]
    # The prefixed names of 0.1.0, deprecated: the same members.
    CHAT_ROLE_UNSPECIFIED: Final[completion_pb2.ChatRole.ValueType]
    CHAT_ROLE_SYSTEM: Final[completion_pb2.ChatRole.ValueType]
    CHAT_ROLE_DEVELOPER: Final[completion_pb2.ChatRole.ValueType]
    CHAT_ROLE_USER: Final[completion_pb2.ChatRole.ValueType]
    CHAT_ROLE_ASSISTANT: Final[completion_pb2.ChatRole.ValueType]

class Rating(_ShortEnum):
    ValueType: TypeAlias = completion_pb2.Rating.ValueType
    UNSPECIFIED: Final[completion_pb2.Rating.ValueType]
    UP: Final[completion_pb2.Rating.ValueType]
    DOWN: Final[completion_pb2.Rating.ValueType]
    # The prefixed names of 0.1.0, deprecated: the same members.
    RATING_UNSPECIFIED: Final[completion_pb2.Rating.ValueType]
    RATING_UP: Final[completion_pb2.Rating.ValueType]
    RATING_DOWN: Final[completion_pb2.Rating.ValueType]

class Provider(_ShortEnum):
    ValueType: TypeAlias = completion_pb2.Provider.ValueType
    UNSPECIFIED: Final[completion_pb2.Provider.ValueType]
    OPENAI: Final[completion_pb2.Provider.ValueType]
    ANTHROPIC: Final[completion_pb2.Provider.ValueType]
    # The prefixed names of 0.1.0, deprecated: the same members.
    PROVIDER_UNSPECIFIED: Final[completion_pb2.Provider.ValueType]
    PROVIDER_OPENAI: Final[completion_pb2.Provider.ValueType]
    PROVIDER_ANTHROPIC: Final[completion_pb2.Provider.ValueType]

class Severity(_ShortEnum):
    ValueType: TypeAlias = dataset_pb2.Severity.ValueType
    UNSPECIFIED: Final[dataset_pb2.Severity.ValueType]
    ERROR: Final[dataset_pb2.Severity.ValueType]
    WARNING: Final[dataset_pb2.Severity.ValueType]
    # The prefixed names of 0.1.0, deprecated: the same members.
    SEVERITY_UNSPECIFIED: Final[dataset_pb2.Severity.ValueType]
    SEVERITY_ERROR: Final[dataset_pb2.Severity.ValueType]
    SEVERITY_WARNING: Final[dataset_pb2.Severity.ValueType]

class DatasetFormat(_ShortEnum):
    ValueType: TypeAlias = dataset_pb2.DatasetFormat.ValueType
    UNSPECIFIED: Final[dataset_pb2.DatasetFormat.ValueType]
    CHAT: Final[dataset_pb2.DatasetFormat.ValueType]
    PREFERENCE: Final[dataset_pb2.DatasetFormat.ValueType]
    COMPLETION: Final[dataset_pb2.DatasetFormat.ValueType]
    # The prefixed names of 0.1.0, deprecated: the same members.
    DATASET_FORMAT_UNSPECIFIED: Final[dataset_pb2.DatasetFormat.ValueType]
    DATASET_FORMAT_CHAT: Final[dataset_pb2.DatasetFormat.ValueType]
    DATASET_FORMAT_PREFERENCE: Final[dataset_pb2.DatasetFormat.ValueType]
    DATASET_FORMAT_COMPLETION: Final[dataset_pb2.DatasetFormat.ValueType]

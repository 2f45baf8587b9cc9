"""glmrun's own errors: everything above the backend seam sees these, never the SDK's.

    GlmrunError
    ├── InputError                 bad input: exit 2 (click's convention for usage errors)
    │   ├── SpecError              a conversation file is invalid; carries every Problem at once
    │   ├── TemplateError          a Jinja2 template failed (undefined variable, include escape …)
    │   └── MissingKeyError        no API key and no --mock
    ├── OutputError                transcripts cannot be written: stops the run, exit 3
    └── ApiError                   a call could not be completed: exit 3
        ├── AuthError              401 / codes 1000-1004           fatal: stops the whole run
        ├── BalanceError           code 1113 (arrears)             fatal: stops the whole run
        ├── RateLimitError         429 / codes 1302, 1303, 1305    retryable, may carry retry_after
        ├── BadRequestError        400-class                       not retryable
        │   └── ContentFilterError code 1301 / finish_reason 'sensitive'
        ├── ServerError            5xx                             retryable
        ├── RequestTimeoutError    the request timed out           retryable
        ├── NetworkError           transport failure               retryable
        ├── StreamError            a broken SSE stream             retryable
        ├── TaskFailedError        an async task ended in FAIL     not retryable
        ├── TaskTimeoutError       an async task did not finish    not retryable
        ├── InternalError          a bug (ours or a hook's) ended one conversation
        ├── ReplayMissError        --replay found no recording     not retryable
        └── BatchEndedError        a batch expired / failed / was cancelled / timed out
"""

from __future__ import annotations

from dataclasses import dataclass


class GlmrunError(Exception):
    """Base of every error glmrun raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located as precisely as we can."""

    file: str
    line: int | None
    column: int | None
    path: str
    reason: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"


class InputError(GlmrunError):
    """The user's input (files, options, environment) is wrong: exit 2."""

    exit_code = 2


class SpecError(InputError):
    """One or more problems in conversation files, reported together."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(InputError):
    """A template could not be rendered."""


class MissingKeyError(InputError):
    """No API key was found for a run that needs one."""


class OutputError(GlmrunError):
    """Transcripts cannot be written (disk full, folder gone read-only …): the run stops, since
    every other conversation would be lost the same way."""

    exit_code = 3
    kind = "output"


class ApiError(GlmrunError):
    """A model call failed; `code` is Zhipu's business code (a string) when the server sent one."""

    exit_code = 3
    retryable = False
    fatal = False  # when True, every other call would fail the same way: stop the run
    kind = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.task_id: str | None = None  # async mode: the task this error belongs to
        self.polls: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "message": self.message,
            "status": self.status,
            "code": self.code,
        }

    def __str__(self) -> str:
        bits = [b for b in (f"HTTP {self.status}" if self.status else None,
                            f"code {self.code}" if self.code else None) if b]
        return f"{self.message} ({', '.join(bits)})" if bits else self.message


class AuthError(ApiError):
    fatal = True
    kind = "auth"


class BalanceError(ApiError):
    fatal = True
    kind = "balance"


class RateLimitError(ApiError):
    retryable = True
    kind = "rate_limit"


class BadRequestError(ApiError):
    kind = "bad_request"


class ContentFilterError(BadRequestError):
    kind = "content_filter"


class ServerError(ApiError):
    retryable = True
    kind = "server"


class RequestTimeoutError(ApiError):
    retryable = True
    kind = "timeout"


class NetworkError(ApiError):
    retryable = True
    kind = "connection"


class StreamError(ApiError):
    retryable = True
    kind = "stream"


class TaskFailedError(ApiError):
    kind = "task_failed"


class TaskTimeoutError(ApiError):
    kind = "task_timeout"


class InternalError(ApiError):
    """A bug in glmrun or in a user hook escaped: it ends one conversation, never the run."""

    kind = "internal"


class ReplayMissError(ApiError):
    kind = "replay_miss"


class BatchEndedError(ApiError):
    """A batch ended without an answer for this request (its status says why)."""

    kind = "batch_error"


class BatchExpiredError(BatchEndedError):
    kind = "batch_expired"


class BatchFailedError(BatchEndedError):
    kind = "batch_failed"


class BatchCancelledError(BatchEndedError):
    kind = "batch_cancelled"


class BatchTimeoutError(BatchEndedError):
    kind = "batch_timeout"


RATE_LIMIT_CODES = frozenset({"1302", "1303", "1305"})
AUTH_CODES = frozenset({"1000", "1001", "1002", "1003", "1004"})
BALANCE_CODES = frozenset({"1113"})
CONTENT_FILTER_CODES = frozenset({"1301"})


def classify(status: int | None, code: str | None, message: str) -> ApiError:
    """Map an HTTP status and Zhipu business code to the right glmrun error."""
    cls: type[ApiError]
    if code in AUTH_CODES or status == 401:
        cls = AuthError
    elif code in BALANCE_CODES:
        cls = BalanceError
    elif code in RATE_LIMIT_CODES or status == 429:
        cls = RateLimitError
    elif code in CONTENT_FILTER_CODES:
        cls = ContentFilterError
    elif status is not None and (status >= 500 or status in (408, 409)):
        cls = ServerError
    else:
        cls = BadRequestError
    return cls(message, status=status, code=code)

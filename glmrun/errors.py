"""glmrun's own errors: everything above the backend seam sees these, never the SDK's.

Every exception of the client lives here (the emulator's own stay in glmrun/mock, which
imports nothing of the client); the trees below are the class hierarchy (tests/test_errors.py).

    GlmrunError
    ├── InputError                 bad input: exit 2 (click's convention for usage errors)
    │   ├── SpecError              a conversation file is invalid; carries every Problem at once
    │   │   └── PlanError          templates or images failed while planning; a TemplateError too
    │   ├── TemplateError          a Jinja2 template failed (undefined variable, include escape …)
    │   │   └── RenderError        one template failed, located inside the rendered value
    │   ├── YamlLoadError          a YAML document cannot be loaded at all; carries its Problem
    │   ├── CasesFileError         a cases file (.csv / .jsonl / .yaml) cannot be used
    │   ├── HookLoadError          a `module:function` hook or check cannot be loaded
    │   ├── MediaError             a local image cannot be sent (size, type, place)
    │   ├── RegexError             a pattern RE2 cannot compile (backreferences, lookaround …)
    │   ├── InvalidExpectationError  an expect item is malformed: its check fails with this
    │   ├── OutsideSuiteError      a file read for a conversation file is outside its folder
    │   ├── MissingKeyError        no API key and no --mock
    │   └── NotARunError           a folder given as a run's output holds no run
    ├── OutputError                transcripts cannot be written: stops the run, exit 3
    ├── ConvoError                 the pytest plugin: a conversation did not pass (its report)
    └── ApiError                   a call could not be completed: exit 3
        ├── AuthError              401 / codes 1000-1005           fatal: stops the whole run
        ├── BalanceError           code 1113 (arrears)             fatal: stops the whole run
        ├── AccountError           codes 1110-1112, 1120, 1121     fatal: stops the whole run
        ├── QuotaError             codes 1304, 1308-1310, 1313     fatal; may carry reset_at
        ├── RateLimitError         429 / codes 1302, 1303, 1305    retryable, may carry retry_after
        ├── OverloadedError        code 1312 (model overloaded)    retryable, keeps concurrency
        ├── BadRequestError        400-class                       not retryable
        │   ├── ContentFilterError code 1301 / finish_reason 'sensitive'
        │   └── ContextWindowError finish_reason 'model_context_window_exceeded'
        ├── ServerError            5xx, code 1234                  retryable
        │   └── BadReplyError      a 200 reply glmrun cannot read  retryable
        │       └── ReplyTooLargeError  a body past the size bound (gzip bomb …)
        ├── RequestTimeoutError    the request timed out           retryable
        ├── NetworkError           transport failure               retryable
        ├── StreamError            a broken SSE stream             retryable
        ├── TaskFailedError        an async task ended in FAIL     not retryable
        ├── BatchEndedError        a batch ended without this request's answer
        │   ├── BatchExpiredError
        │   ├── BatchFailedError
        │   ├── BatchCancelledError
        │   └── BatchTimeoutError  glmrun stopped waiting (a LocalError too)
        └── LocalError             no API answer said so: a condition of glmrun's own
            ├── TaskTimeoutError   an async task did not finish within the poll timeout
            ├── DeadlineError      the conversation's --deadline passed (its call cut off)
            ├── ToolRoundsError    the model still called tools after max_tool_rounds
            ├── RequestTooLargeError  a batch line larger than a batch file may hold
            ├── RunStoppedError    a fatal error elsewhere stopped the run before this call
            ├── ReplayMissError    --replay found no recording
            └── InternalError      a bug (ours or a hook's) ended one conversation

Control flow inside one layer, never shown to a user as they are (so no GlmrunErrors):

    Exception
    ├── ToolFailure                a tool call glmrun could not answer: its text is the result
    └── Cancelled                  a call cut off before it touched the network (→ an ApiError)
    ValueError
    └── NonFiniteError             NaN / Infinity in JSON: a ValueError, as json.loads's own
    BaseException
    └── Interrupted                the run is stopping, this conversation is cut off: not an
                                   error, so no `except Exception` on its way swallows it
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


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


def display_path(path: tuple[Any, ...]) -> str:
    """`("messages", 1, "role")` → `messages[1].role` (odd keys quoted: `vars["a b"]`): a
    Problem's `path` as people read it."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}" if out else part
        else:
            text = str(part).replace("\\", "\\\\").replace('"', '\\"')
            out += f'["{text}"]'
    return out


class InputError(GlmrunError):
    """The user's input (files, options, environment) is wrong: exit 2."""

    exit_code = 2


class NotARunError(InputError):
    """A folder given as a run's output holds no run.json and no transcript: exit 2."""


class SpecError(InputError):
    """One or more problems in conversation files, reported together."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(InputError):
    """A template could not be rendered."""


class RenderError(TemplateError):
    """A template failed; `reason` says why, `path` where inside the rendered value."""

    def __init__(self, reason: str, path: tuple[Any, ...] = ()) -> None:
        self.reason = reason
        self.path = path
        where = display_path(path)
        super().__init__(f"{where}: {reason}" if where else reason)

    def at(self, path: tuple[Any, ...]) -> RenderError:
        """The same error located at `path`."""
        return RenderError(self.reason, path)


class PlanError(SpecError, TemplateError):
    """Templates (or local images) failed while planning; carries every Problem."""


class YamlLoadError(InputError):
    """A YAML document could not be loaded at all; `problem` says where and why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class CasesFileError(InputError):
    """A cases file cannot be used; the loader makes its message a Problem of the file naming
    it."""


class HookLoadError(InputError):
    """A `module:function` reference could not be resolved."""


class MediaError(InputError):
    """A local image cannot be sent; `reason` says why (the caller adds file and path)."""

    def __init__(self, reason: str, path: tuple[Any, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


class RegexError(InputError):
    """A pattern outside the RE2 dialect (backreferences, lookaround ...) or too big for it."""


class InvalidExpectationError(InputError):
    """An expect item itself is malformed (wrong type, unknown option): its check fails with
    this reason, the run goes on."""


class OutsideSuiteError(InputError):
    """A file named by a conversation file (include, image, cases, hook) is outside its suite
    folder."""


class MissingKeyError(InputError):
    """No API key was found for a run that needs one."""


class OutputError(GlmrunError):
    """Transcripts cannot be written (disk full, folder gone read-only …): the run stops, since
    every other conversation would be lost the same way."""

    exit_code = 3
    kind = "output"


class ConvoError(GlmrunError):
    """The pytest plugin: a conversation did not pass; the message is the whole report."""


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
        task_id: str | None = None,
        polls: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.task_id = task_id  # async mode: the task this error belongs to
        self.polls = polls

    def where(self, *, note: str = "", task_id: str | None = None,
              polls: int | None = None) -> ApiError:
        """The same error, said of a place: `note` added to its message, the async task and its
        polls recorded (a new error: one already raised is never changed)."""
        return type(self)(
            f"{self.message}{note}", status=self.status, code=self.code,
            retry_after=self.retry_after, task_id=task_id or self.task_id,
            polls=self.polls if polls is None else polls,
        )

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


class AccountError(ApiError):
    """The account is inactive, missing or locked: every further call fails the same way."""

    fatal = True
    kind = "account"


class QuotaError(ApiError):
    """A daily quota or usage cap is used up; `reset_at` is when Zhipu says it resets."""

    fatal = True
    kind = "quota"

    @property
    def reset_at(self) -> str | None:
        found = RESET_TIME.search(self.message)
        return found.group(0) if found else None


class RateLimitError(ApiError):
    retryable = True
    kind = "rate_limit"


class OverloadedError(ApiError):
    """The model is overloaded for everyone (1312): wait and retry, but this account's
    concurrency is not the cause, so the gate keeps its width."""

    retryable = True
    kind = "overloaded"


class BadRequestError(ApiError):
    kind = "bad_request"


class ContentFilterError(BadRequestError):
    kind = "content_filter"


class ContextWindowError(BadRequestError):
    """The conversation outgrew the model's context window: the turn ends, no retry helps."""

    kind = "context_window"


class ServerError(ApiError):
    retryable = True
    kind = "server"


class BadReplyError(ServerError):
    """A reply that says it succeeded but cannot be read (cut or empty JSON, a stream chunk
    that is not JSON, `message: null`): a server fault, retried."""

    kind = "bad_reply"


class ReplyTooLargeError(BadReplyError):
    """A reply body that decodes past glmrun's bound (a gzip bomb): reading stopped there."""

    kind = "reply_too_large"


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


class BatchEndedError(ApiError):
    """A batch ended without an answer for this request (its status says why)."""

    kind = "batch_error"


class LocalError(ApiError):
    """The conversation cannot go on for a reason of glmrun's own: no API answer said so, so
    it has no HTTP status or business code. Each has its own kind, never an API error's."""


class TaskTimeoutError(LocalError):
    """An async task did not finish within glmrun's poll timeout."""

    kind = "task_timeout"


class DeadlineError(LocalError):
    """The conversation's deadline passed: the call in flight was cut off, nothing retried."""

    kind = "deadline"


class ToolRoundsError(LocalError):
    """The model still called tools after the turn's `max_tool_rounds` rounds."""

    kind = "tool_rounds"


class RequestTooLargeError(LocalError):
    """A request whose batch line is larger than a batch input file may hold: not sent."""

    kind = "request_too_large"


class RunStoppedError(LocalError):
    """Another conversation's fatal error (auth, balance, quota) stopped the run before this
    conversation's next request was sent."""

    kind = "stopped"


class ReplayMissError(LocalError):
    """--replay found no recording of the request."""

    kind = "replay_miss"


class InternalError(LocalError):
    """A bug in glmrun or in a user hook escaped: it ends one conversation, never the run."""

    kind = "internal"


class BatchExpiredError(BatchEndedError):
    kind = "batch_expired"


class BatchFailedError(BatchEndedError):
    kind = "batch_failed"


class BatchCancelledError(BatchEndedError):
    kind = "batch_cancelled"


class BatchTimeoutError(BatchEndedError, LocalError):
    """The batch did not end within glmrun's wait (it may still: `glmrun batch fetch`)."""

    kind = "batch_timeout"


class ToolFailure(Exception):
    """A tool call glmrun could not answer; its text goes back to the model."""


class Cancelled(Exception):
    """The scope was cancelled before the call touched the network."""


class NonFiniteError(ValueError):
    """A JSON text or value holds NaN or an infinity."""


class Interrupted(BaseException):
    """The run is stopping and this conversation is cut off: it gets no transcript, and what
    it had answered is saved for --resume (`glmrun.run.resume`).

    A BaseException, like KeyboardInterrupt: it is not an error, and no `except Exception` on
    its way (a check, the judge) may turn it into one.
    """


RESET_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}")

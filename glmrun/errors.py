"""glmrun's own errors: everything above the backend seam sees these, never the SDK's.

    GlmrunError
    ├── InputError                 bad input: exit 2 (click's convention for usage errors)
    │   ├── SpecError              a conversation file is invalid; carries every Problem at once
    │   ├── TemplateError          a Jinja2 template failed (undefined variable, include escape …)
    │   ├── OutsideSuiteError      a file read for a conversation file is outside its folder
    │   ├── MissingKeyError        no API key and no --mock
    │   └── NotARunError           a folder given as a run's output holds no run
    ├── OutputError                transcripts cannot be written: stops the run, exit 3
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
        ├── BatchEndedError        a batch expired / failed / was cancelled, or ended
        │                          without this request's answer (BatchTimeoutError: glmrun
        │                          stopped waiting; a LocalError too)
        └── LocalError             no API answer said so: a condition of glmrun's own
            ├── TaskTimeoutError   an async task did not finish within the poll timeout
            ├── DeadlineError      the conversation's --deadline passed (its call cut off)
            ├── ToolRoundsError    the model still called tools after max_tool_rounds
            ├── RequestTooLargeError  a batch line larger than a batch file may hold
            ├── RunStoppedError    a fatal error elsewhere stopped the run before this call
            ├── ReplayMissError    --replay found no recording
            └── InternalError      a bug (ours or a hook's) ended one conversation
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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


class NotARunError(InputError):
    """A folder given as a run's output holds no run.json and no transcript: exit 2."""


class SpecError(InputError):
    """One or more problems in conversation files, reported together."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(InputError):
    """A template could not be rendered."""


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


RESET_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}")


@dataclass(frozen=True)
class CodeRule:
    """What one Zhipu business code means: the HTTP status it comes with, glmrun's error."""

    status: int
    error: type[ApiError]
    meaning: str


# Zhipu's business codes (docs.bigmodel.cn "错误码"), by what they tell glmrun to do. The code
# decides, not the HTTP status: most account and quota codes come as 429 like rate limits.
# Statuses the error-code page leaves out follow its FAQ (account / quota answers are 429).
ZHIPU_CODES: dict[str, CodeRule] = {
    "1000": CodeRule(401, AuthError, "authentication failed"),
    "1001": CodeRule(401, AuthError, "no Authentication header"),
    "1002": CodeRule(401, AuthError, "invalid authentication token"),
    "1003": CodeRule(401, AuthError, "authentication token expired"),
    "1004": CodeRule(401, AuthError, "authentication token rejected"),
    "1005": CodeRule(401, AuthError, "two-factor login required"),
    "1110": CodeRule(429, AccountError, "account inactive"),
    "1111": CodeRule(429, AccountError, "account does not exist"),
    "1112": CodeRule(429, AccountError, "account locked"),
    "1113": CodeRule(429, BalanceError, "account in arrears"),
    "1120": CodeRule(429, AccountError, "account cannot be accessed"),
    "1121": CodeRule(429, AccountError, "account locked for irregular activity"),
    "1210": CodeRule(400, BadRequestError, "invalid API parameters"),
    "1211": CodeRule(400, BadRequestError, "model does not exist"),
    "1212": CodeRule(400, BadRequestError, "model does not support this call method"),
    "1213": CodeRule(400, BadRequestError, "a parameter is missing"),
    "1214": CodeRule(400, BadRequestError, "a parameter is invalid"),
    "1215": CodeRule(400, BadRequestError, "two parameters cannot be set together"),
    "1220": CodeRule(403, BadRequestError, "no permission for this API"),
    "1221": CodeRule(404, BadRequestError, "API taken offline"),
    "1222": CodeRule(404, BadRequestError, "API does not exist"),
    "1234": CodeRule(500, ServerError, "network error on Zhipu's side"),
    "1261": CodeRule(400, BadRequestError, "prompt too long"),
    "1301": CodeRule(400, ContentFilterError, "unsafe or sensitive content"),
    "1302": CodeRule(429, RateLimitError, "too many requests in flight"),
    "1303": CodeRule(429, RateLimitError, "requests too frequent"),
    "1304": CodeRule(429, QuotaError, "daily call quota used up"),
    "1305": CodeRule(429, RateLimitError, "traffic limit triggered"),
    "1308": CodeRule(429, QuotaError, "usage cap reached (resets at the time given)"),
    "1309": CodeRule(429, QuotaError, "GLM Coding Plan expired"),
    "1310": CodeRule(429, QuotaError, "weekly / monthly usage cap reached (resets at the time "
                                      "given)"),
    "1311": CodeRule(429, BadRequestError, "the plan does not include this model"),
    "1312": CodeRule(429, OverloadedError, "model overloaded, try later or another model"),
    "1313": CodeRule(429, QuotaError, "rate restricted by the fair-use policy"),
}


def action(error: type[ApiError]) -> str:
    """What glmrun does about an error of this class, in the README's words."""
    if error.fatal:
        return "stop the run"
    if issubclass(error, RateLimitError):
        return "retry; narrow concurrency"
    if issubclass(error, OverloadedError):
        return "retry after a backoff; concurrency kept"
    if error.retryable:
        return "retry"
    return "end that conversation"


def code_table() -> str:
    """ZHIPU_CODES as the README's Markdown table (a test keeps the README equal to it)."""
    lines = ["| code | HTTP | meaning | what glmrun does |", "|---|---|---|---|"]
    lines += [f"| {code} | {rule.status} | {rule.meaning} | {action(rule.error)} |"
              for code, rule in ZHIPU_CODES.items()]
    return "\n".join(lines)


def classify(
    status: int | None, code: str | None, message: str, *, retry_after: float | None = None
) -> ApiError:
    """Map Zhipu's business code (first) or the HTTP status to the right glmrun error."""
    cls: type[ApiError]
    rule = ZHIPU_CODES.get(code or "")
    if rule is not None:
        cls = rule.error
    elif status == 401:
        cls = AuthError
    elif status == 429:
        cls = RateLimitError
    elif status is not None and (status >= 500 or status in (408, 409)):
        cls = ServerError
    else:
        cls = BadRequestError
    return cls(message, status=status, code=code, retry_after=retry_after)


def from_dict(data: Mapping[str, object]) -> ApiError:
    """An error as `ApiError.to_dict` wrote it, of its own class again (a stored answer keeps
    its kind: a context-window end or a local condition never comes back as bad_request);
    an unknown kind is classified by its status and code."""
    status, code = data.get("status"), data.get("code")
    status = status if isinstance(status, int) else None
    code = None if code is None else str(code)
    message = str(data.get("message"))
    cls = _by_kind().get(str(data.get("kind")))
    return cls(message, status=status, code=code) if cls else classify(status, code, message)


def _by_kind() -> dict[str, type[ApiError]]:
    found: dict[str, type[ApiError]] = {ApiError.kind: ApiError}
    todo = list(ApiError.__subclasses__())
    while todo:
        cls = todo.pop()
        found.setdefault(cls.kind, cls)
        todo += cls.__subclasses__()
    return found

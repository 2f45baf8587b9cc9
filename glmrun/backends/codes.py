"""Zhipu's business codes → glmrun's errors: one table (`ZHIPU_CODES`) that decides what each
code tells glmrun to do, `classify` for an error answer, `from_dict` for a stored one. The
README's error table is generated from it (`code_table`, checked by a test).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from glmrun.errors import (
    AccountError,
    ApiError,
    AuthError,
    BadRequestError,
    BalanceError,
    ContentFilterError,
    OverloadedError,
    QuotaError,
    RateLimitError,
    ServerError,
)


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
    "1230": CodeRule(500, ServerError, "API call flow error on Zhipu's side"),
    "1231": CodeRule(400, BadRequestError, "request_id already used (glmrun sends a fresh one "
                                           "per attempt: glmrun.run.request_ids)"),
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

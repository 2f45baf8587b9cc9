"""Zhipu's error codes as the emulator answers them: HTTP status, business code, message.

The codes and messages are Zhipu's table at https://docs.bigmodel.cn/cn/api/api-code (English:
https://docs.z.ai/api-reference/api-code); the HTTP statuses are those of the table at
https://docs.bigmodel.cn/cn/faq/api-code, which pairs each code with its status (auth codes
401, account and quota codes 429, parameter codes 400, 1200 and 1234 500). Where a message has a
`${field}`-style blank, the emulator fills it with a plausible value; `{reset}` and
`{error_id}` are filled when the error is raised.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

JsonObject = dict[str, Any]
BEIJING = timezone(timedelta(hours=8))  # Zhipu states reset times in Beijing time


class WireError(Exception):
    """An error the emulator answers with: HTTP status plus Zhipu's `{"error": {code, message}}`
    (and, for a content-safety refusal, the documented `contentFilter` list beside it)."""

    def __init__(self, status: int, code: str, message: str,
                 content_filter: tuple[JsonObject, ...] = ()) -> None:
        super().__init__(f"HTTP {status} code {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.content_filter = content_filter

    def body(self) -> JsonObject:
        body = error_body(self.code, self.message)
        if self.content_filter:
            body["contentFilter"] = list(self.content_filter)
        return body


def error_body(code: str, message: str) -> JsonObject:
    """Zhipu's error envelope; `code` is always a string on the wire."""
    return {"error": {"code": code, "message": message}}


# code -> (HTTP status, message), every code of Zhipu's table.
CODES: dict[str, tuple[int, str]] = {
    # authentication
    "1000": (401, "身份验证失败。"),
    "1001": (401, "Header中未收到Authentication参数，无法进行身份验证。"),
    "1002": (401, "Authentication Token非法，请确认Authentication Token正确传递。"),
    "1003": (401, "Authentication Token已过期，请重新生成/获取。"),
    "1004": (401, "通过Authentication Token的验证失败。"),
    "1005": (401, "已开启二次认证保护，需要二次认证登录。"),
    # account: every further call fails the same way
    "1100": (429, "账户读写错误。"),
    "1110": (429, "您的账户当前处于非活动状态。请检查账户信息。"),
    "1111": (429, "您的账户不存在。"),
    "1112": (429, "您的账户已被锁定，请联系客服解锁。"),
    "1113": (429, "您的账户已欠费，请充值后重试。"),
    "1120": (429, "无法成功访问您的账户，请稍后重试。"),
    "1121": (429, "账户存违规行为，账号已被锁定。"),
    # API call errors
    "1200": (500, "API 调用错误。"),
    "1210": (400, "API 调用参数有误，请检查文档。"),
    "1211": (400, "模型不存在，请检查模型代码。"),
    "1212": (400, "当前模型不支持 sse 调用方式。"),
    "1213": (400, "未正常接收到 messages 参数。"),
    "1214": (400, "messages 参数非法。请检查文档。"),
    "1215": (400, "do_sample 与 temperature 不能同时设置，请检查文档。"),
    "1220": (403, "您无权访问 glm-4-plus。"),
    "1221": (404, "API glm-4-0520 已下线。"),
    "1222": (404, "API glm-x 不存在。"),
    "1230": (500, "API 调用流程出错。"),
    "1231": (400, "您已有请求：{request_id}"),
    "1234": (500, "网络错误，错误id：{error_id}，请联系客服。"),
    "1261": (400, "Prompt 超长"),
    # policy blocks
    "1300": (400, "API 调用被策略阻止。"),
    "1301": (400, "系统检测到输入或生成内容可能包含不安全或敏感内容，请您避免输入易产生敏感内容的"
                  "提示语，感谢您的配合。"),
    "1302": (429, "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"),
    "1303": (429, "您当前使用该API的频率过高，请降低频率，或联系客服增加限额。"),
    "1304": (429, "该 API 已达今日调用次数限额，如有更多需求，请联系客服购买。"),
    "1305": (429, "该 API 已触发流量限制。"),
    "1308": (429, "已达到 5 小时的使用上限。您的限额将在 {reset} 重置。"),
    "1309": (429, "您的 GLM Coding Plan 套餐已到期，暂无法使用，前往官方续订后即可恢复 "
                  "https://bigmodel.cn/claude-code"),
    "1310": (429, "您已达到每周/每月使用上限，您的限额将在 {reset} 重置。"),
    "1311": (429, "当前订阅套餐暂未开放glm-4-plus权限。"),
    "1312": (429, "该模型当前访问量过大，请您稍后再试，或切换其他模型如 glm-4-flash 等。"),
    "1313": (429, "您的账户当前使用模式不符合公平使用策略，请求频率已受到限制。"),
}

# Fault names that are plain HTTP errors: every code above, plus shorthands for the statuses.
STATUS_FAULTS: dict[str, tuple[int, str, str]] = {
    **{code: (status, code, message) for code, (status, message) in CODES.items()},
    "429": (429, "1302", CODES["1302"][1]),
    "401": (401, "1000", CODES["1000"][1]),
    "500": (500, "500", "Internal Error"),
    "503": (503, "503", "服务暂时不可用，请稍后重试。(Service Unavailable)"),
}

STREAM_ERROR = ("1301", CODES["1301"][1])  # the error event of a stream cut by the filter


def code_error(code: str, detail: str = "", **blanks: str) -> WireError:
    """The WireError of one of Zhipu's codes, `detail` (the emulator's reason) appended."""
    status, message = CODES[code]
    message = message.format(**blanks) if blanks else message
    return WireError(status, code, f"{message}({detail})" if detail else message)


def invalid(detail: str) -> WireError:
    """1210, "API call parameters are wrong", naming what was wrong."""
    return code_error("1210", detail)


def status_fault(name: str) -> WireError | None:
    """The error a status fault answers with, or None for faults that are not HTTP errors."""
    if name not in STATUS_FAULTS:
        return None
    status, code, message = STATUS_FAULTS[name]
    now = datetime.now(BEIJING)
    message = message.format(reset=(now + timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S"),
                             error_id=now.strftime("%Y%m%d%H%M%S") + "0a1b2c3d",
                             request_id="mock-request")
    if code == "1301":  # the content-safety page's refusal: which side, and how severe
        return WireError(status, code, message, ({"level": 1, "role": "user"},))
    return WireError(status, code, message)

"""The zai-sdk adapter (`pip install 'glmrun[zai]'`, `--sdk zai`): one of the two modules
importing an SDK. zai-sdk is zhipuai's successor with the same API shape and exception tree;
it builds `ZhipuAiClient` (China) or `ZaiClient` (international: it also asks for English
messages) and names zai's exception classes; `sdk.SdkBackend` does the rest.

zai-sdk 0.0.3.5 and later require PyJWT >= 2.9, which every zhipuai 2.1.x forbids (< 2.9),
so glmrun[zai] takes zai-sdk < 0.0.3.5: both SDKs then live in one environment.
"""

from __future__ import annotations

from typing import Any

import httpx

from glmrun import errors
from glmrun.backends.regions import default_base_url
from glmrun.backends.sdk import SDK_PARAMS, SdkBackend, SdkErrors

# zai's create() also takes watermark_enabled by name (same body on the wire).
ZAI_PARAMS = SDK_PARAMS | {"watermark_enabled"}


def require_sdk() -> None:
    """InputError, before anything runs, when zai-sdk is not installed."""
    try:
        import zai  # noqa: F401
    except ImportError:
        raise errors.InputError("--sdk zai needs zai-sdk: pip install 'glmrun[zai]'") from None


class ZaiBackend(SdkBackend):
    """Calls GLM through zai-sdk's `ZhipuAiClient` / `ZaiClient`."""

    def __init__(self, *, api_key: str, base_url: str | None = None, region: str | None = None,
                 **options: Any) -> None:
        require_sdk()
        import zai  # slow import: only when a real call is about to happen
        from zai.core import _errors as zai_errors
        from zai.types.chat.chat_completion import Completion

        url = base_url or default_base_url(region)
        client_type = zai.ZaiClient if region == "intl" else zai.ZhipuAiClient

        def make_client(http: httpx.Client, timeout: httpx.Timeout) -> Any:
            return client_type(api_key=api_key, base_url=url, max_retries=0, timeout=timeout,
                               http_client=http)

        super().__init__(
            make_client=make_client, completion_type=Completion, base_url=url,
            sdk_params=ZAI_PARAMS,
            sdk_errors=SdkErrors(
                base=zai_errors.ZaiError, status=zai_errors.APIStatusError,
                connection=zai_errors.APIConnectionError, timeout=zai_errors.APITimeoutError,
                validation=zai_errors.APIResponseValidationError,
                response=zai_errors.APIResponseError,
            ),
            **options,
        )

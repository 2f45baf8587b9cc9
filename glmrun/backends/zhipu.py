"""The zhipuai adapter (the default SDK, the tutorial's): one of the two modules importing an
SDK. It builds the `ZhipuAI` client (glmrun owns retries, so the SDK's are off) and names the
SDK's exception classes; `sdk.SdkBackend` does the rest.
"""

from __future__ import annotations

from typing import Any

import httpx

from glmrun.backends.regions import default_base_url
from glmrun.backends.sdk import SdkBackend, SdkErrors


class ZhipuBackend(SdkBackend):
    """Calls GLM through zhipuai's `ZhipuAI` client."""

    def __init__(self, *, api_key: str, base_url: str | None = None, region: str | None = None,
                 **options: Any) -> None:
        import zhipuai  # slow import: only when a real call is about to happen
        from zhipuai.types.chat.chat_completion import Completion

        url = base_url or default_base_url(region)

        def make_client(http: httpx.Client, timeout: httpx.Timeout) -> Any:
            return zhipuai.ZhipuAI(api_key=api_key, base_url=url, max_retries=0,
                                   timeout=timeout, http_client=http)

        super().__init__(
            make_client=make_client, completion_type=Completion, base_url=url,
            sdk_errors=SdkErrors(
                base=zhipuai.ZhipuAIError, status=zhipuai.APIStatusError,
                connection=zhipuai.APIConnectionError, timeout=zhipuai.APITimeoutError,
                validation=zhipuai.APIResponseValidationError,
                response=zhipuai.APIResponseError,
            ),
            **options,
        )

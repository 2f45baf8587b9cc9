"""Zhipu's two platforms: the China one (open.bigmodel.cn, the SDKs' default) and the
international one (api.z.ai, Z.ai). A region gives the default base URL, where the key is
read from and which environment variable may move the base URL; both SDKs reach both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    name: str
    base_url: str
    key_env_vars: tuple[str, ...]  # the first set one is the key
    base_url_env_var: str


REGIONS: Mapping[str, Region] = {r.name: r for r in (
    # zhipuai's ZhipuAI and zai's ZhipuAiClient read ZHIPUAI_*; the tutorial says ZHIPU_API_KEY
    Region("cn", "https://open.bigmodel.cn/api/paas/v4",
           ("ZHIPUAI_API_KEY", "ZHIPU_API_KEY"), "ZHIPUAI_BASE_URL"),
    # zai's ZaiClient: https://api.z.ai/api/paas/v4, ZAI_API_KEY / ZAI_BASE_URL (docs.z.ai)
    Region("intl", "https://api.z.ai/api/paas/v4", ("ZAI_API_KEY",), "ZAI_BASE_URL"),
)}
DEFAULT_REGION = "cn"


def region(name: str | None) -> Region:
    """The region of that name (default: cn); a ValueError naming the known ones."""
    found = REGIONS.get(name or DEFAULT_REGION)
    if found is None:
        raise ValueError(f"unknown region {name!r} (known: {', '.join(REGIONS)})")
    return found


def find_api_key(env: Mapping[str, str] | None = None, *, where: str | None = None) -> str | None:
    """The API key of the region `where` (default cn) from the environment (or `env`)."""
    env = os.environ if env is None else env
    for name in region(where).key_env_vars:
        if env.get(name):
            return env[name]
    return None


def default_base_url(where: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The region's base URL: its environment variable, else Zhipu's address for it."""
    env = os.environ if env is None else env
    r = region(where)
    return env.get(r.base_url_env_var) or r.base_url

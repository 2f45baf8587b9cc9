"""Where the API key may go, and base URLs as they may be shown.

A conversation file may name a `base_url`, but a file is not trusted with the key (a pull
request that changes one line would send CI's key anywhere): the key goes only to Zhipu's own
API hosts, to loopback, or to a host the person running glmrun named — `--base-url`,
`ZHIPUAI_BASE_URL`, `--allow-host` or `GLMRUN_ALLOW_HOSTS` (comma-separated), else the project
file's `allow_hosts` (below both, as every project setting is). Hosts compare
exactly, as the HTTP client parses them: `open.bigmodel.cn.evil.com`, `open.bigmodel.cn@evil.com`,
look-alike IDN names and the IP addresses of other hosts are other hosts.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from glmrun import errors

if TYPE_CHECKING:
    import httpx

ZHIPU_HOSTS = ("open.bigmodel.cn", "api.z.ai")  # zhipuai's default base URL; the international one
ALLOW_ENV_VAR = "GLMRUN_ALLOW_HOSTS"
BASE_URL_ENV_VAR = "ZHIPUAI_BASE_URL"  # the SDK's name
ZAI_BASE_URL_ENV_VAR = "ZAI_BASE_URL"  # the international platform's (zai's ZaiClient)
_HOST_NAME = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")


def _parse(url: str) -> httpx.URL | None:
    import httpx  # the SDK's own HTTP client: its parser decides where a request goes

    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None


def _host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii", "replace").lower()


@functools.lru_cache(maxsize=256)  # every transcript shows its URL: parse each one once
def display(url: str) -> str:
    """The URL without the credentials a `user:password@` part carries (for every output)."""
    parsed = _parse(url)
    if parsed is None or not parsed.userinfo:
        return url
    return str(parsed.copy_with(username=None, password=None))


def credentials(url: str | None) -> tuple[str, ...]:
    """The secrets in a URL's `user:password@` part (to redact wherever they might show): as
    written, the password alone, and the Basic authorization the HTTP client makes of them."""
    parsed = _parse(url) if url else None
    if parsed is None or not parsed.userinfo:
        return ()
    userinfo = parsed.userinfo.decode("ascii", "replace")
    basic = base64.b64encode(f"{parsed.username}:{parsed.password}".encode()).decode("ascii")
    return tuple(s for s in (userinfo, parsed.password, basic) if s)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class KeyHosts:
    """The hosts the API key may be sent to, besides Zhipu's own and loopback."""

    named: frozenset[str] = frozenset()

    @classmethod
    def from_environment(
        cls, allow: Iterable[str] = (), base_url: str | None = None,
        env: Mapping[str, str] | None = None, project: Iterable[str] = (),
    ) -> KeyHosts:
        """The hosts named by `--allow-host` (`allow`), `--base-url`, $ZHIPUAI_BASE_URL and
        $GLMRUN_ALLOW_HOSTS, or, when neither `--allow-host` nor $GLMRUN_ALLOW_HOSTS is given
        (set, even empty), the project file's `allow_hosts` (`project`); a name that is not a
        host name is an InputError."""
        env = os.environ if env is None else env
        allow = list(allow)
        names = [*allow, *env.get(ALLOW_ENV_VAR, "").split(",")]
        if not allow and ALLOW_ENV_VAR not in env:  # command line > environment > project
            names = list(project)
        hosts = set()
        for name in (n.strip() for n in names):
            if not name:
                continue
            parsed = _parse(f"https://{name}/") if _HOST_NAME.fullmatch(name) else None
            if parsed is None or not parsed.raw_host:
                raise errors.InputError(
                    f"'{name}' is not a host name (--allow-host / {ALLOW_ENV_VAR} take bare host "
                    "names such as api.example.com)")
            hosts.add(_host(parsed))
        for url in (base_url, env.get(BASE_URL_ENV_VAR), env.get(ZAI_BASE_URL_ENV_VAR)):
            parsed = _parse(url) if url else None
            if parsed is not None and parsed.raw_host:
                hosts.add(_host(parsed))
        return cls(frozenset(hosts))

    def refusal(self, url: str) -> str | None:
        """Why the key may not be sent to `url`, or None when it may."""
        parsed = _parse(url)
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.raw_host:
            return "not an http(s) URL"
        host = _host(parsed)
        if _is_loopback(host) or host in self.named:
            return None
        if host not in ZHIPU_HOSTS:
            return (f"the API key is not sent to '{host}': only to Zhipu's hosts "
                    f"({', '.join(ZHIPU_HOSTS)}), loopback, or a host named with --base-url, "
                    f"${BASE_URL_ENV_VAR}, --allow-host, ${ALLOW_ENV_VAR} or the project "
                    "file's allow_hosts")
        if parsed.scheme != "https":
            return f"plain http to {host} would send the API key unencrypted: use https"
        return None

    def check(self, url: str, where: str) -> None:
        """InputError when the key may not be sent to `url` (named by `where`)."""
        reason = self.refusal(url)
        if reason is not None:
            raise errors.InputError(f"{where}: base_url '{display(url)}': {reason}")

"""The baseline program for bench/overhead.py: a bare thread pool calling the zhipuai SDK.

    python bench/bare_sdk.py BASE_URL N JOBS

Run as a fresh process, like glmrun, it pays the same interpreter start and the same SDK
import; it sends write_suite's N user messages with `ZhipuAI(max_retries=0)` from JOBS
threads over a JOBS-connection pool (the pool glmrun gives itself), and writes nothing.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from zhipuai import ZhipuAI

sys.path.insert(0, str(Path(__file__).parent))
from _common import KEY, MODEL, prompts


def run(base_url: str, n: int, jobs: int) -> list[str]:
    http = httpx.Client(limits=httpx.Limits(max_connections=jobs, max_keepalive_connections=jobs))
    client = ZhipuAI(api_key=KEY, base_url=base_url, max_retries=0, http_client=http)

    def one(text: str) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}]
        )
        return str(reply.choices[0].message.content)

    with ThreadPoolExecutor(jobs) as pool:
        replies = list(pool.map(one, prompts(n)))
    http.close()
    return replies


if __name__ == "__main__":
    url, count, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    got = run(url, count, threads)
    if len(got) != count or not all(got):
        sys.exit(f"bare SDK: {len(got)} replies, {sum(1 for g in got if not g)} empty")
    print(f"{len(got)} replies")

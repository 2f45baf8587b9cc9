"""A plain HTTP/1.0 chat-completions server for bench/overhead.py, independent of glmrun.

    python bench/plain_server.py [--latency 0.1]

It prints `listening on BASE_URL` and answers `POST .../chat/completions` after `--latency`
seconds with a sync completion shaped as Zhipu documents it (id, request_id, created, model,
one choice, usage), replying the user's last message back. HTTP/1.0 without keep-alive: every
request is a new connection, closed after its answer, as a plain server does. Only the standard
library: the figures do not depend on glmrun's own emulator being fast.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_PREFIX = "/api/paas/v4"
_ids = itertools.count(1)
_ids_lock = threading.Lock()


def completion(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or [{}]
    text = str(messages[-1].get("content") or "")
    with _ids_lock:
        n = next(_ids)
    prompt, reply = len(text), f"You said: {text}"
    return {
        "id": f"plain-{n}",
        "request_id": str(body.get("request_id") or f"req-{n}"),
        "created": int(time.time()),
        "model": str(body.get("model", "")),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": reply}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": len(reply),
                  "total_tokens": prompt + len(reply)},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection, closed after the answer
    latency_s = 0.0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"code": "404", "message": f"no route {self.path}"}})
            return
        time.sleep(self.latency_s)
        self._send(200, completion(body))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 50 clients connecting at once: the default 5 drops SYNs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    Handler.latency_s = args.latency
    with Server(("127.0.0.1", args.port), Handler) as httpd:
        print(f"listening on http://127.0.0.1:{httpd.server_address[1]}{API_PREFIX}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()


if __name__ == "__main__":
    main()

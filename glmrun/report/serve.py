"""`glmrun view`: the report served on 127.0.0.1, rebuilt from the folder on every request."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from glmrun.report.html import build


class ReportServer:
    """Serves `GET /` (the report of one folder, or the diff report of two) on loopback only."""

    def __init__(self, folders: Sequence[Path], port: int = 0) -> None:
        self.folders = tuple(Path(f) for f in folders)
        folders_ = self.folders

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/", "/index.html"):
                    self.send_error(404)
                    return
                body = build(folders_).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the terminal shows the URL, not a line per reload

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> ReportServer:
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until the server is closed (or Ctrl-C)."""
        while self._thread.is_alive():
            self._thread.join(0.5)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

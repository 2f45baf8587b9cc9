"""Security: where the API key may go, which files a conversation file may have read, and that no
secret reaches any output (transcripts, JUnit, terminal, --live, --dry-run, stores, batch files).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import FAST, glmrun, transcripts, write
from hypothesis import given, settings
from hypothesis import strategies as st

from glmrun.errors import OutsideSuiteError
from glmrun.mock import MockConfig, MockServer
from glmrun.safety.atomic import encode_json, redacted_json
from glmrun.safety.baseurl import KeyHosts, credentials, display
from glmrun.safety.redaction import Redactor
from glmrun.safety.suitefiles import inside_suite

# A key shaped like Zhipu's: a 32-character id, a dot, a 16-character secret.
ID = "0123456789abcdef0123456789abcdef"
SECRET = "S3cr3tHalfXyZ987"
KEY = f"{ID}.{SECRET}"
FORMS = (KEY, ID, SECRET)


def leaks(text: str, forms: tuple[str, ...] = FORMS) -> list[str]:
    return [f for f in forms if f in text]


def every_byte(*folders: Path) -> dict[Path, str]:
    """The text of every file under the folders (hidden ones included)."""
    found = {}
    for folder in folders:
        for path in [folder] if folder.is_file() else sorted(folder.rglob("*")):
            if path.is_file():
                found[path] = path.read_bytes().decode("utf-8", "replace")
    return found


# --- the redactor ---------------------------------------------------------------------------


def test_the_key_and_each_half_are_redacted() -> None:
    r = Redactor([KEY])
    text = f"Bearer {KEY}; id={ID}, secret '{SECRET}', glued{SECRET}glued"
    assert r.text(text) == "Bearer ***; id=***, secret '***', glued***glued"


_SECRETS = st.lists(st.sampled_from(["x", "k.y", KEY, 'q"uo\\te', "tab\there", "\udcff.lone",
                                      "clé.sécrète", "a-b"]) | st.text(min_size=1, max_size=12),
                    max_size=3)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(secrets=_SECRETS, data=_JSON, salt=st.sampled_from(["", "x", KEY, ID, "é", "\\"]))
def test_skipping_the_walk_on_clean_bytes_redacts_exactly_as_the_walk(
    secrets: list[str], data: Any, salt: str
) -> None:
    """redacted_json (used by transcripts, run.json, stores and batch state) skips the
    walk over the values when a byte search says no secret is there: it must give exactly
    what the walk gives, whatever the secrets (quotes, tabs, lone surrogates, accents, short
    words) and the values (with a secret or its neighbours mixed in)."""
    redactor = Redactor(secrets)
    value = {"salted": f"{salt} {data}" if isinstance(data, str) else data, salt: [data]}
    clean, encoded = redacted_json(value, redactor)
    assert encoded == encode_json(redactor.value(value)) == encode_json(clean)
    if not redactor.may_be_in(encode_json(value)):  # nothing to redact: the walk agrees
        assert encode_json(redactor.value(value)) == encode_json(value)


def test_short_keys_are_redacted_as_whole_words_only() -> None:
    r = Redactor(["x"])
    assert r.text("x marks the spot; text, x-ray, x") == "*** marks the spot; text, x-ray, ***"
    assert r.text("密钥x。") == "密钥***。"  # CJK next to it is not part of an ASCII word
    r = Redactor(["ab.cdefgh"])  # the halves of a short key follow the same rule
    assert r.text("ab cdefgh about abcdefgh ab.cdefgh") == "*** *** about abcdefgh ***"


def test_structured_values_keep_their_field_names_under_a_short_key() -> None:
    r = Redactor(["id", KEY])
    data = {"id": "id", "status": "x id y", KEY: [f"k={KEY}"], "n": 1}
    assert r.value(data) == {"id": "***", "status": "x *** y", "***": ["k=***"], "n": 1}


def test_no_secret_means_nothing_changes() -> None:
    r = Redactor(["", ""])
    assert not r and r.text("Bearer x") == "Bearer x"
    stream = r.stream()
    assert stream.feed("ab") == "ab" and stream.flush() == ""


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 33, 100])
def test_a_key_split_across_streamed_pieces_is_redacted(size: int) -> None:
    r = Redactor([KEY, "word"])
    text = (f"first {KEY} then the id {ID} and {SECRET[:5]}… and the secret {SECRET}"
            f"{SECRET} glued, a word, words, end {ID[:-1]}")
    for offset in range(size):  # every way of cutting the text into pieces of `size`
        stream = r.stream()
        cuts = [0, *range(offset or size, len(text), size), len(text)]
        out = "".join(stream.feed(text[a:b]) for a, b in itertools.pairwise(cuts))
        out += stream.flush()
        assert out == r.text(text)
    assert leaks(r.text(text)) == [] and "words" in r.text(text)


def test_the_stream_redactor_gives_out_text_as_soon_as_no_secret_can_start_in_it() -> None:
    stream = Redactor([KEY]).stream()
    assert stream.feed("x" * 100) == "x" * (100 - len(KEY) - 1)
    assert stream.feed(KEY[:10]) == "x" * 10
    assert stream.feed(KEY[10:]) + stream.flush() == "x" * (len(KEY) + 1 - 10) + "***"


# --- where the key may go -------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://open.bigmodel.cn/api/paas/v4", "https://api.z.ai/api/paas/v4",
    "https://OPEN.BIGMODEL.CN/api/paas/v4/", "http://127.0.0.1:8765/api/paas/v4",
    "http://127.9.9.9/v4", "http://localhost:1/v4", "http://[::1]:9/v4",
])
def test_zhipu_and_loopback_may_have_the_key(url: str) -> None:
    assert KeyHosts().refusal(url) is None


@pytest.mark.parametrize("url", [
    "https://evil.example/api/paas/v4",
    "https://open.bigmodel.cn.evil.example/api/paas/v4",  # a suffix trick
    "https://open.bigmodel.cn@evil.example/api/paas/v4",  # userinfo, not the host
    "https://open.bigmodel.cn\\@evil.example/",
    "https://xn--pen-bigmodel-3ub.cn/", "https://ореn.bigmodel.cn/",  # look-alike IDN names
    "https://bigmodel.cn/", "https://z.ai/", "https://api.z.ai.evil.example/",
    "https://open.bigmodel.cn./",  # the trailing-dot name is not the exact host
    "https://118.31.0.1/api/paas/v4", "http://2130706433/", "http://0x7f.0.0.1/",
    "http://open.bigmodel.cn/api/paas/v4",  # Zhipu, but in the clear
    "ftp://open.bigmodel.cn/", "file:///etc/passwd", "open.bigmodel.cn/api", "",
])
def test_any_other_host_may_not(url: str) -> None:
    assert KeyHosts().refusal(url) is not None


def test_hosts_named_by_the_person_running_glmrun_may() -> None:
    hosts = KeyHosts.from_environment(
        ["gw.corp.example"], base_url="https://cli.example:8443/v4",
        env={"ZHIPUAI_BASE_URL": "https://env.example/v4",
             "GLMRUN_ALLOW_HOSTS": "a.example, B.example"})
    assert hosts.named == {"gw.corp.example", "cli.example", "env.example", "a.example",
                           "b.example"}
    assert hosts.refusal("http://gw.corp.example/v4") is None
    assert hosts.refusal("https://gw.corp.example.evil.example/v4") is not None


@pytest.mark.parametrize("name", ["https://a.example", "a.example/x", "user@a.example", "a b"])
def test_an_allowed_host_is_a_bare_host_name(name: str) -> None:
    with pytest.raises(Exception, match="is not a host name"):
        KeyHosts.from_environment([name], env={})


def test_credentials_in_a_base_url_are_never_shown() -> None:
    url = "https://bob:pa55w0rd-x@gw.example:8443/api/paas/v4"
    assert display(url) == "https://gw.example:8443/api/paas/v4"
    assert credentials(url) == ("bob:pa55w0rd-x", "pa55w0rd-x", "Ym9iOnBhNTV3MHJkLXg=")
    assert display("http://127.0.0.1:1/v4") == "http://127.0.0.1:1/v4"


class Listener:
    """A TCP listener on 127.0.0.1 that records what arrives and answers 502: stands for every
    host the key must not reach (the `elsewhere` fixture resolves every name to it)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.received.append(data)
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")

    def close(self) -> None:
        # Stop the thread before the descriptor is freed. Closed under the running thread, its
        # number went to a later test's emulator socket, whose connections the thread then took
        # and answered 502 (the secrets test's batch fetch ended 3 once in a few runs).
        # shutdown() makes a pending or coming accept() fail at once; then join, then close.
        self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self.sock.close()

    def requests(self) -> list[tuple[str, str]]:
        """(request line, Host header) of each request received."""
        out = []
        for raw in self.received:
            lines = raw.decode("latin-1").split("\r\n")
            host = next((ln.split(":", 1)[1].strip() for ln in lines
                         if ln.lower().startswith("host:")), "")
            out.append((lines[0], host))
        return out


@pytest.mark.timeout(10)
def test_a_closed_listener_takes_no_connection_of_a_later_socket() -> None:
    listener = Listener()
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 502")
    listener.close()
    assert not listener._thread.is_alive()  # nothing left that could call accept() again
    # the next socket may get the freed descriptor number: its connections are its own
    with socket.create_server(("127.0.0.1", 0)) as later:
        later.settimeout(5)
        with socket.create_connection(later.getsockname(), timeout=5):
            conn, _ = later.accept()
            conn.close()
    assert len(listener.received) == 1


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """Every host name resolves to a listener on 127.0.0.1 (in this process): a request that
    leaves for any host lands there, and none can reach a real address."""
    listener = Listener()
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    yield listener
    listener.close()


def foreign_file(tmp_path: Path, url: str) -> Path:
    return write(tmp_path / "suite", "f.yaml", f"""
        model: m
        base_url: "{url}"
        messages: [{{role: user, content: hi}}]
    """)


@pytest.mark.timeout(30)
def test_a_file_cannot_send_the_key_to_another_host(
    elsewhere: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    url = f"http://collector.evil.example:{elsewhere.port}/api/paas/v4"
    path = foreign_file(tmp_path, url)
    out = tmp_path / "out"
    result = glmrun(path, "-o", out, "--retries", "0", *FAST)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: base_url '{url}': the API key is not sent "
                                    "to 'collector.evil.example': only to Zhipu's")
    assert elsewhere.received == [] and not out.exists()
    dry = glmrun(path, "--dry-run")  # refused the same way: nothing would be sent
    assert dry.exit_code == 2 and dry.stdout == ""
    # the proof that the refusal is what kept it away: named by the person, it goes there
    allowed = glmrun(path, "-o", out, "--retries", "0", "--allow-host", "collector.evil.example",
                     *FAST)
    assert allowed.exit_code == 3
    assert elsewhere.requests() == [("POST /api/paas/v4/chat/completions HTTP/1.1",
                                     f"collector.evil.example:{elsewhere.port}")]
    assert f"Bearer {KEY}\r\n" in elsewhere.received[0].decode()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["env", "allow-env", "base-url"])
def test_the_person_running_glmrun_can_name_the_host(
    elsewhere: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    url = f"http://gw.example:{elsewhere.port}/api/paas/v4"
    path = foreign_file(tmp_path, url)
    args: list[str] = []
    if how == "env":
        monkeypatch.setenv("ZHIPUAI_BASE_URL", "http://gw.example/other")
    elif how == "allow-env":
        monkeypatch.setenv("GLMRUN_ALLOW_HOSTS", "other.example,gw.example")
    else:
        args = ["--base-url", url]
    result = glmrun(path, "-o", tmp_path / "out", "--retries", "0", *args, *FAST)
    assert result.exit_code == 3  # the request left (to the listener, which answers 502)
    assert elsewhere.requests() == [("POST /api/paas/v4/chat/completions HTTP/1.1",
                                     f"gw.example:{elsewhere.port}")]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("url", [
    "http://open.bigmodel.cn.evil.example:{port}/api/paas/v4",
    "http://open.bigmodel.cn@evil.example:{port}/api/paas/v4",
    "http://api.z.ai.evil.example:{port}/api/paas/v4",
    "http://open.bigmodel.cn:{port}/api/paas/v4",  # in the clear: the key would be readable
])
def test_look_alike_hosts_are_refused_before_any_request(
    elsewhere: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    path = foreign_file(tmp_path, url.format(port=elsewhere.port))
    result = glmrun(path, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and "base_url" in result.stderr
    assert elsewhere.received == []


def test_a_refused_file_stops_the_whole_run_before_any_request(
    api: MockServer, tmp_path: Path
) -> None:
    write(tmp_path / "suite", "a_ok.yaml", f"""
        model: m
        base_url: "{api.base_url}"
        messages: [{{role: user, content: hi}}]
    """)
    write(tmp_path / "suite", "b_bad.yaml", """
        model: m
        base_url: "https://elsewhere.example/v4"
        messages: [{role: user, content: hi}]
    """)
    result = glmrun(tmp_path / "suite", "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and "b_bad.yaml: base_url" in result.stderr
    assert api.count() == 0


def test_with_base_url_or_mock_a_files_base_url_is_not_used(
    api: MockServer, tmp_path: Path
) -> None:
    path = foreign_file(tmp_path, "https://elsewhere.example/v4")
    assert glmrun(path, "--base-url", api.base_url, "-o", tmp_path / "o", *FAST).exit_code == 0
    assert glmrun(path, "--mock", "-o", tmp_path / "m", *FAST).exit_code == 0
    assert api.count() == 1


# --- files read on a file's behalf ----------------------------------------------------------


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A suite folder with a secret next to it (outside) and symlinks out of it."""
    (tmp_path / "outside.csv").write_text("who\nTOP-SECRET-ROW\n", "utf-8")
    (tmp_path / "outside.py").write_text("def hook(**kw):\n    return 'TOP-SECRET-HOOK'\n",
                                         "utf-8")
    folder = tmp_path / "suite"
    (folder / "_data").mkdir(parents=True)
    (folder / "_data" / "ok.csv").write_text("who\nAnn\n", "utf-8")
    (folder / "_data" / "link.csv").symlink_to(tmp_path / "outside.csv")
    (folder / "out").symlink_to(tmp_path, target_is_directory=True)
    (folder / "inner.csv").symlink_to(folder / "_data" / "ok.csv")  # a link inside is fine
    (folder / "hooks.py").symlink_to(tmp_path / "outside.py")
    return folder


@pytest.mark.parametrize("ref", [
    "../outside.csv", "_data/../../outside.csv", str(Path("/") / "etc" / "hostname"),
    "_data/link.csv", "out/outside.csv", "./out/./outside.csv", "..\\outside.csv",
    "C:/outside.csv",
])
def test_a_cases_file_outside_the_suite_folder_is_refused(suite: Path, ref: str) -> None:
    if ref.startswith("/etc"):
        ref = str(suite.parent / "outside.csv")  # an absolute path to the very file
    path = write(suite, "c.yaml", f"""
        model: m
        messages: [{{role: user, content: "{{{{ who }}}}"}}]
        cases: "{ref.replace(chr(92), chr(92) * 2)}"
    """)
    result = glmrun("validate", path)
    assert result.exit_code == 2
    assert f"cases file '{ref}' is outside the suite folder" in result.stderr
    run = glmrun(path, "--mock", "-o", suite.parent / "o")
    assert run.exit_code == 2 and "TOP-SECRET" not in run.output


def test_a_cases_file_inside_the_suite_folder_still_works(suite: Path) -> None:
    for ref in ("_data/ok.csv", "inner.csv", "./_data/ok.csv"):
        path = write(suite, "c.yaml", f"""
            model: m
            messages: [{{role: user, content: "{{{{ who }}}}"}}]
            cases: {ref}
        """)
        assert glmrun("validate", path).exit_code == 0, ref


@pytest.mark.parametrize(("ref", "reason"), [
    ("hooks:hook", "module 'hooks.py' is outside the suite folder"),  # a symlink out
    ("out.outside:hook", "module 'out/outside.py' is outside the suite folder"),  # a folder link
    ("_data..outside:hook", "'_data..outside' is not a module name (dotted names only: a.b)"),
])
def test_a_python_hook_outside_the_suite_folder_is_refused(
    suite: Path, ref: str, reason: str
) -> None:
    path = write(suite, "h.yaml", f"""
        model: m
        messages: [{{role: user, content: hi}}]
        expect: [{{python: "{ref}"}}]
    """)
    result = glmrun(path, "--mock", "-o", suite.parent / "o", "-v")
    assert result.exit_code == 1  # a check that cannot load is a failed expectation
    data = next(iter(transcripts(suite.parent / "o").values()))
    assert data["expectations"][0]["reason"].endswith(reason)
    assert "TOP-SECRET" not in result.output


def test_a_hook_name_that_climbs_is_refused_by_the_schema(suite: Path) -> None:
    path = write(suite, "h.yaml", """
        model: m
        messages: [{role: user, content: hi}]
        expect: [{python: "..outside:hook"}]
    """)
    result = glmrun("validate", path)
    assert result.exit_code == 2 and "expect[0].python" in result.stderr


@pytest.mark.parametrize("ref", ["../outside.png", "out/outside.png", "/tmp/x.png"])
def test_images_and_includes_share_the_rule(suite: Path, ref: str) -> None:
    for what in ("image", "include"):
        with pytest.raises(OutsideSuiteError, match=f"^{what} '{ref}' is outside the suite"):
            inside_suite(suite, ref, what)


# --- outputs that cannot be written ---------------------------------------------------------


@pytest.mark.parametrize("option", ["--record", "--cache", "--junit", "--html"])
def test_an_output_that_cannot_be_written_is_found_before_any_request(
    api: MockServer, tmp_path: Path, option: str
) -> None:
    (tmp_path / "file").write_text("x", "utf-8")
    target = tmp_path / "file" / "below" / (
        "report" if option in ("--junit", "--html") else "")
    path = write(tmp_path / "suite", "g.yaml", "model: m\nmessages: [{role: user, content: hi}]\n")
    result = glmrun(path, "--base-url", api.base_url, "-o", tmp_path / "out", option, target,
                    *FAST)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {option} ") and "cannot write there" in result.stderr
    assert api.count() == 0


def test_a_junit_report_that_cannot_be_written_is_exit_3_and_a_line(
    api: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glmrun.output import junit as junit_module

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(junit_module, "write_atomically", full)
    path = write(tmp_path / "suite", "g.yaml", "model: m\nmessages: [{role: user, content: hi}]\n")
    out, junit = tmp_path / "out", tmp_path / "j.xml"
    result = glmrun(path, "--base-url", api.base_url, "-o", out, "--junit", junit, *FAST)
    assert result.exit_code == 3
    assert result.stderr == (f"error: cannot write the JUnit report {junit}: No space left on "
                             f"device; the transcripts are in {out}/\n")
    assert (out / "g.json").is_file() and not junit.exists()


# --- no secret in any output ----------------------------------------------------------------


@pytest.fixture
def leaky() -> Iterator[MockServer]:
    """An emulator that wants KEY and echoes it (whole and in halves) in every reply, streamed
    reply and error message."""
    with MockServer(MockConfig(api_key=KEY, echo_key=True, async_polls=1, batch_steps=0)) as srv:
        yield srv


SUITE = f"""
model: glm-4-flash
vars: {{half: "{SECRET}"}}
messages:
  - role: user
    content: "whole {{{{ key }}}} · id {{{{ key_id }}}} · secret {{{{ half }}}} · row {{{{ row }}}}"
expect: [{{contains: "{ID}"}}, {{equals: "no such reply"}}]
cases: _data/rows.csv
conversations:
  - {{name: s_sync, mode: sync}}
  - {{name: s_stream, mode: stream}}
  - {{name: s_async, mode: async}}
  - name: s_fault
    mode: sync
    messages: [{{role: user, content: "{{{{ key }}}} [[fault:1261]]"}}]
"""


@pytest.mark.timeout(60)
@pytest.mark.slow
def test_no_output_of_any_mode_or_option_holds_the_key(
    leaky: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    suite = tmp_path / "suite"
    write(suite, "_data/rows.csv", f"row\n{KEY}\n")
    path = write(suite, "leak.yaml", SUITE)
    batch = write(suite, "batch.yaml", SUITE.split("conversations:")[0] + "mode: batch\n")
    out = tmp_path / "out"
    url = leaky.base_url
    both = ("--var", f"key={KEY}", "--var", f"key_id={ID}", "--base-url", url, *FAST)
    runs = {
        "record": glmrun(path, *both, "-o", out / "record", "--record", out / "store", "-v",
                         "--junit", out / "junit.xml", "-j", "4"),
        "cache": glmrun(path, *both, "-o", out / "cache", "--cache", out / "cache-store"),
        "cached": glmrun(path, *both, "-o", out / "cache", "--cache", out / "cache-store"),
        "replay": glmrun(path, *both, "-o", out / "replay", "--replay", out / "store"),
        "live": glmrun(path, *both, "-o", out / "live", "--live", "--filter", "s_stream",
                       "--chunk-times"),
        "batch": glmrun(batch, *both, "-o", out / "batch", "--no-wait"),
    }
    inputs = every_byte(out / "batch" / ".glmrun-batch" / "inputs")  # the JSONL uploaded
    uploaded = [f.data.decode() for f in leaky.files() if f.purpose == "batch"]
    assert len(inputs) == 1 and list(inputs.values()) == uploaded
    runs["fetch"] = glmrun("batch", "fetch", "-o", out / "batch", "--batch-poll", "0.01")
    runs["dry"] = glmrun(path, *both, "--dry-run")
    assert runs["fetch"].exit_code == 1, (runs["fetch"].stdout, runs["fetch"].stderr)
    assert {name: r.exit_code for name, r in runs.items()} == {
        "record": 3, "cache": 3, "cached": 3, "replay": 3, "live": 1, "batch": 0, "fetch": 1,
        "dry": 0}
    # the server did get the key and echoed it: the outputs had something to hide
    assert transcripts(out / "record")["leak--s_sync--case1"]["messages"][-1]["content"].count(
        "***") >= 4
    assert not leaks("".join(uploaded)) and "***" in "".join(uploaded)
    assert leaky.count() > 0 and any(
        r.headers.get("authorization") == f"Bearer {KEY}" for r in leaky.requests)
    live = runs["live"].stdout
    assert "[echo: Authorization: Bearer *** | key: *** | part: *** | part: ***]" in live
    found = {f"{name} stdout": r.stdout for name, r in runs.items()}
    found.update({f"{name} stderr": r.stderr for name, r in runs.items()})
    files = every_byte(out)
    assert any(p.suffix == ".md" for p in files) and any(".glmrun-batch" in str(p) for p in files)
    assert (out / "junit.xml") in files and any("store" in str(p) for p in files)
    found.update({str(p): text for p, text in files.items()})
    assert {where: leaks(text) for where, text in found.items() if leaks(text)} == {}


@pytest.mark.timeout(30)
def test_credentials_in_base_urls_never_show(
    leaky: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    # httpx turns user:password into Basic authorization: the emulator echoes that in its 401
    with_creds = leaky.base_url.replace("http://", "http://agent:Pr0xyPassw0rd@")
    path = write(tmp_path / "suite", "c.yaml", f"""
        model: m
        base_url: "{with_creds}"
        messages: [{{role: user, content: hi}}]
    """)
    out = tmp_path / "out"
    secrets = ("Pr0xyPassw0rd", *credentials(with_creds))
    dry = glmrun(path, "--dry-run")
    assert json.loads(dry.stdout)["base_url"] == leaky.base_url
    run = glmrun(path, "-o", out, "--junit", tmp_path / "j.xml", "-v", *FAST)
    assert run.exit_code == 3
    assert any("basic" in (r.headers.get("authorization") or "").lower()
               for r in leaky.requests)  # what the emulator echoed was the credentials
    texts = {"stdout": run.stdout + dry.stdout, "stderr": run.stderr + dry.stderr,
             **{str(p): t for p, t in every_byte(out, tmp_path / "j.xml").items()}}
    assert transcripts(out)["c"]["base_url"] == leaky.base_url
    assert {w: leaks(t, secrets) for w, t in texts.items() if leaks(t, secrets)} == {}



@pytest.mark.timeout(30)
def test_the_project_file_can_name_the_host_below_the_command_line_and_environment(
    elsewhere: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`allow_hosts` in glmrun.toml lets a file's base_url have the key; --allow-host or
    $GLMRUN_ALLOW_HOSTS (even empty), given, replace the project's list."""
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    monkeypatch.delenv("GLMRUN_ALLOW_HOSTS", raising=False)
    monkeypatch.chdir(tmp_path)
    url = f"http://gw.example:{elsewhere.port}/api/paas/v4"
    path = foreign_file(tmp_path, url)
    out = tmp_path / "out"
    refusal = (f"error: suite/f.yaml: base_url '{url}': the API key is not sent to 'gw.example': "
               "only to Zhipu's")
    refused = glmrun(path, "-o", out, "--retries", "0", *FAST)
    assert refused.exit_code == 2 and refused.stderr.startswith(refusal)
    (tmp_path / "glmrun.toml").write_text('allow_hosts = ["other.example", "gw.example"]\n',
                                          "utf-8")
    for args, env in ((["--allow-host", "other.example"], None), ([], "other.example"),
                      ([], "")):
        if env is not None:
            monkeypatch.setenv("GLMRUN_ALLOW_HOSTS", env)
        above = glmrun(path, "-o", out, "--retries", "0", *args, *FAST)
        assert above.exit_code == 2 and above.stderr.startswith(refusal), (args, env)
        monkeypatch.delenv("GLMRUN_ALLOW_HOSTS", raising=False)
    assert elsewhere.received == [] and not out.exists()
    allowed = glmrun(path, "-o", out, "--retries", "0", *FAST)
    assert allowed.exit_code == 3  # the request left (to the listener, which answers 502)
    assert elsewhere.requests() == [("POST /api/paas/v4/chat/completions HTTP/1.1",
                                     f"gw.example:{elsewhere.port}")]
    assert f"Bearer {KEY}\r\n" in elsewhere.received[0].decode()

"""A tiny in-process fake of the Hugging Face Hub HTTP API, for upload tests (no network, loopback only).

Written against the installed huggingface_hub 2.4.0 (http client: httpx2). It serves exactly what these calls need:

    with FakeHub() as hub:
        api = HfApi(endpoint=hub.url, token="hf_fake_token_for_tests")
        api.create_repo("user/my-drafter", private=True, exist_ok=True)   # POST /api/repos/create
        api.create_branch("user/my-drafter", branch="v1", exist_ok=True)  # POST /api/models/user/my-drafter/branch/v1
        api.upload_folder(folder_path=..., repo_id="user/my-drafter", revision="v1", commit_message="...")
        #   POST /api/validate-yaml                     (only when README.md is uploaded)
        #   POST /api/models/user/my-drafter/preupload/v1
        #   POST /api/models/user/my-drafter/commit/v1  (ndjson, file contents inline as base64)
        assert hub.files("user/my-drafter", "v1")["config.json"] == expected_bytes

How the upload path is steered (no LFS, no Xet, hf_xet not needed):
  The client never picks the transfer mode itself: `_commit_api._fetch_upload_modes` POSTs a sample of every file
  to `/preupload/{revision}` and takes `uploadMode` ("regular" | "lfs") verbatim from the answer (the only
  client-side override: empty files are forced to "regular"). Only "lfs" files go through Xet (when hf_xet is
  installed, `HfApi.upload_folder` -> `_upload_pipeline`, or `preupload_lfs_files` -> `_upload_xet_files`) or the
  legacy LFS batch API. This server answers "regular" for every file whatever its size, so every file is sent
  base64-encoded inside the commit's ndjson body; no xet-write-token / LFS batch / storage request is ever made,
  with or without hf_xet installed. (The real Hub answers "lfs" for large/binary files; we deliberately don't.)
  The preupload answer also omits "oid", so the client never skips a file as "unchanged" (which would make it
  call repo_info, not served here).

Notes: huggingface_hub reads HF_HUB_OFFLINE at import time (tests/conftest.py sets it to "1"); in-process tests
must also `monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)`. Any other endpoint answers
404 with a JSON error (X-Error-Code: FakeHubNotImplemented) and is still recorded in `hub.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_REPO_OP = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)$")


class FakeHub:
    def __init__(self) -> None:
        self.requests: list[dict] = []  # {method, path, query, headers (lower-cased keys), body (bytes)}
        self.repos: dict[str, dict] = {}  # repo_id -> {"type", "private", "branches": {name: {path: bytes}}}
        self.commits: list[dict] = []  # {repo_id, revision, summary, description, oid, paths (touched)}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "FakeHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                hub._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: OS-chosen free port
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Committed files of `repo_id` at branch `revision`, with their exact bytes."""
        with self._lock:
            return dict(self.repos[repo_id]["branches"][revision])

    # ------------------------------------------------------------------ HTTP plumbing
    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return body
                body += h.rfile.read(size)
                h.rfile.readline()  # CRLF after each chunk
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, payload, error_code: str | None = None) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        if error_code:
            h.send_header("X-Error-Code", error_code)
            h.send_header("X-Error-Message", payload.get("error", ""))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        body = self._read_body(h)
        with self._lock:
            self.requests.append({"method": h.command, "path": split.path, "query": parse_qs(split.query),
                                  "headers": {k.lower(): v for k, v in h.headers.items()}, "body": body})
            try:
                status, payload, code = self._route(h.command, split.path, body)
            except (ValueError, KeyError, TypeError) as e:  # malformed request payload
                status, payload, code = 400, {"error": f"Bad request: {e!r}"}, "BadRequest"
        self._reply(h, status, payload, code)

    # ------------------------------------------------------------------ API emulation (called under self._lock)
    def _route(self, method: str, path: str, body: bytes) -> tuple[int, dict, str | None]:
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            repo_type = req.get("type") or "model"
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{self.url}/{prefix}{repo_id}"
            if repo_id in self.repos:
                return 409, {"error": "You already created this repo", "url": url}, None
            private = req.get("visibility") == "private" or req.get("private") is True
            self.repos[repo_id] = {"type": repo_type, "private": private, "branches": {"main": {}}}
            return 200, {"url": url, "name": repo_id}, None
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}, None
        m = _REPO_OP.match(path)
        if method == "POST" and m:
            repo_type, repo_id, op, revision = m.group(1)[:-1], m.group(2), m.group(3), unquote(m.group(4))
            repo = self.repos.get(repo_id)
            if repo is None or repo["type"] != repo_type:
                return 404, {"error": "Repository not found"}, "RepoNotFound"
            branches = repo["branches"]
            if op == "branch":
                if revision in branches:
                    return 409, {"error": "Reference already exists"}, None
                start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
                if start not in branches:
                    return 404, {"error": f"Invalid rev id: {start}"}, "RevisionNotFound"
                branches[revision] = dict(branches[start])
                return 200, {}, None
            if revision not in branches:
                return 404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound"
            if op == "preupload":
                files = json.loads(body)["files"]  # [{path, sample (base64 of first 512 bytes), size}]
                return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                       for f in files]}, None
            return self._commit(repo_id, revision, body)
        return 404, {"error": f"FakeHub does not implement {method} {path}"}, "FakeHubNotImplemented"

    def _commit(self, repo_id: str, revision: str, body: bytes) -> tuple[int, dict, str | None]:
        tree = dict(self.repos[repo_id]["branches"][revision])
        header: dict = {}
        changed: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise ValueError(f"unsupported encoding {value.get('encoding')!r}")
                tree[value["path"]] = base64.b64decode(value["content"], validate=True)
                changed.append(value["path"])
            elif key == "deletedFile":
                tree.pop(value["path"])
                changed.append(value["path"])
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                changed += [p for p in tree if p.startswith(folder)]
                tree = {p: b for p, b in tree.items() if not p.startswith(folder)}
            else:  # "lfsFile" never happens: preupload always answers "regular"
                return 422, {"error": f"FakeHub does not support commit operation {key!r}"}, None
        self.repos[repo_id]["branches"][revision] = tree
        oid = hashlib.sha1(f"{len(self.commits)}:{repo_id}:{revision}".encode() + body).hexdigest()
        self.commits.append({"repo_id": repo_id, "revision": revision, "summary": header.get("summary"),
                             "description": header.get("description"), "oid": oid, "paths": changed})
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{repo_id}/commit/{oid}",
                     "pullRequestUrl": None}, None

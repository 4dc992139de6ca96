"""A real HTTP server on 127.0.0.1 that serves models the way the Hugging Face hub does, and
openai-whisper checkpoints the way openai's bucket does, for the fetch tests.

Hub layout (what huggingface_hub asks for):
- ``GET /api/models/<repo>/revision/<rev>?blobs=true``: ``{"id", "sha", "siblings": [{"rfilename",
  "size", "blobId", "lfs": {"sha256", "size", "pointerSize"}}]}``; weight files are LFS files,
  the rest plain git blobs (``blobId`` = git blob sha1). Unknown repo or revision: 404 with the
  hub's ``X-Error-Code``.
- ``HEAD|GET /<repo>/resolve/<rev>/<file>``: ``X-Repo-Commit``, ``ETag`` (sha256 for LFS files,
  blob sha1 otherwise), ``Content-Length``; ranges for resumed downloads.
Whisper: ``GET /whisper/<sha256>/<name>.pt``.

``drop``: names of files whose downloads stop half-way (the server closes the connection after
half the bytes it announced), every time they are asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class FakeHub:
    """Repositories (commits of files, branches) and whisper checkpoints, served over HTTP."""

    def __init__(self):
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> sha -> files
        self.branches: dict[str, dict[str, str]] = {}  # repo -> branch -> sha
        self.whisper: dict[str, bytes] = {}  # url path -> bytes
        self.drop: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._url = ""

    # ------------------------------------------------------------ content

    def add_commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit of `files` on `branch`; returns its sha."""
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        sha = digest.hexdigest()
        self.commits.setdefault(repo_id, {})[sha] = dict(files)
        self.branches.setdefault(repo_id, {})[branch] = sha
        return sha

    def add_folder(self, repo_id: str, folder: Path, branch: str = "main") -> str:
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        return self.add_commit(repo_id, files, branch)

    def add_whisper(self, name: str, data: bytes) -> str:
        """Serve a whisper checkpoint; returns its URL path (with the sha256 in it)."""
        path = f"/whisper/{hashlib.sha256(data).hexdigest()}/{name}.pt"
        self.whisper[path] = data
        return path

    def resolve(self, repo_id: str, revision: str) -> str | None:
        if revision in self.commits.get(repo_id, {}):
            return revision
        return self.branches.get(repo_id, {}).get(revision)

    # ------------------------------------------------------------ server

    @property
    def url(self) -> str:
        """The server's address (kept after `stop`: it then refuses connections)."""
        return self._url

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self._url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving: the port refuses connections afterwards (the network is off)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        """No line per request on stderr: requests are recorded in ``FakeHub.requests``."""

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        hub = self.fake_hub
        path = self.path.split("?")[0]
        hub.requests.append((self.command, path))
        if path in hub.whisper:
            return self._send_file(hub.whisper[path], {}, Path(path).name, body)
        api = re.fullmatch(r"/api/models/(.+)/revision/([^/]+)", path)
        if api:
            return self._model_info(api.group(1), api.group(2))
        resolve = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", path)
        if resolve:
            repo_id, revision, name = resolve.groups()
            sha = hub.resolve(repo_id, revision)
            files = hub.commits.get(repo_id, {}).get(sha, {})
            if name not in files:
                return self._error(404, "EntryNotFound")
            data = files[name]
            etag = hashlib.sha256(data).hexdigest() if _is_lfs(name) else git_blob_sha1(data)
            headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"'}
            return self._send_file(data, headers, name, body)
        self._error(404, "EntryNotFound")

    def _model_info(self, repo_id: str, revision: str) -> None:
        hub = self.fake_hub
        if repo_id not in hub.commits:
            return self._error(404, "RepoNotFound")
        sha = hub.resolve(repo_id, revision)
        if sha is None:
            return self._error(404, "RevisionNotFound")
        siblings = []
        for name, data in sorted(hub.commits[repo_id][sha].items()):
            sibling = {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(data)}
            if _is_lfs(name):
                sha256 = hashlib.sha256(data).hexdigest()
                sibling["lfs"] = {"sha256": sha256, "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        info = {"id": repo_id, "modelId": repo_id, "sha": sha, "siblings": siblings}
        payload = json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_file(self, data: bytes, headers: dict, name: str, body: bool) -> None:
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if ranged and body:
            start = int(ranged.group(1))
        part = data[start:]
        self.send_response(206 if start else 200)
        for key, value in headers.items():
            self.send_header(key, value)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body:
            return
        if name in self.fake_hub.drop:
            # Half of what was announced, then the connection goes away.
            self.wfile.write(part[: max(1, len(part) // 2)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(part)

    def _error(self, status: int, code: str) -> None:
        payload = json.dumps({"error": code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def _is_lfs(name: str) -> bool:
    return name.endswith(LFS_SUFFIXES)

#!/usr/bin/env python3
"""A stand-in for the Python Baal's agent (`uvicorn baal_agent.main:app --host H --port P`),
standard library only, speaking its HTTP API (the behaviour spec, section 4) over the files its
deployer left (section 3.6): settings from the environment (`AGENT_NAME`, `AGENT_SECRET`,
`DB_PATH`, `WORKSPACE_PATH`), history in `DB_PATH` in its schema (section 5.4, WAL).

- `GET /health` without auth: {"status": "ok", "agent_name": NAME}.
- Everything else needs `Authorization: Bearer SECRET` (a bare secret works too), else 401
  {"error": "unauthorized"}.
- `POST /chat` {"message", "chat_id"} (other fields ignored, as pydantic does; 422 without
  those two): stores the user's message and a reply ("NAME heard: MESSAGE") as two rows, and
  answers `data: {json}` events: keepalive, text, done. No model is called.
- `GET /pending`: the queued messages of every chat, oldest first, deleted as they are read
  (the query, a lease included, is ignored).
- `DELETE /chat/{chat_id}`: forgets that chat, {"status": "ok", "deleted": N}.
- `GET /files/{path}`: a workspace file; 403 {"error": ...} outside it or for a sensitive name.
- Anything else: 404 {"detail": "Not Found"}, as FastAPI answers.

It dies on SIGTERM without closing its database, as the Python agent after a crash: its latest
turns may then be only in `agent.db-wal`, so a copy of `agent.db` alone would miss them.

For tests, two more ways to run it, on the database at `DB_PATH`:
- `--seed`: creates the schema and adds the rows of the JSON object on stdin,
  {"history": [{"chat_id", "role", "content"}], "pending": [{"chat_id", "content", "source"}]};
- `--history`: prints the history as that JSON array, oldest first, opening the database
  read-only (so it neither checkpoints nor changes a byte of it)."""
import datetime
import hmac
import http.server
import json
import os
import sqlite3
import sys
import threading
import urllib.parse

NAME = os.environ.get("AGENT_NAME", "Agent")
SECRET = os.environ.get("AGENT_SECRET", "")
WORKSPACE = os.path.realpath(os.environ.get("WORKSPACE_PATH", "/opt/baal-agent/workspace"))
SENSITIVE = {".env", "agent.db", "agent.db-shm", "agent.db-wal"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT,
    tool_calls TEXT,
    tool_call_id TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_messages_chat ON messages(chat_id, created_at);
CREATE TABLE IF NOT EXISTS pending_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id TEXT NOT NULL,
    content TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'system',
    created_at TEXT NOT NULL
);
"""


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def open_db(path):
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    return db


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "uvicorn"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer "):
            given = given[len("Bearer "):]
        given = given.strip()
        if given and hmac.compare_digest(given.encode(), SECRET.encode()):
            return True
        self.reply(401, {"error": "unauthorized"})
        return False

    def path_only(self):
        return urllib.parse.urlsplit(self.path).path

    def do_GET(self):
        path = self.path_only()
        if path == "/health":
            return self.reply(200, {"status": "ok", "agent_name": NAME})
        if not self.authorized():
            return
        if path == "/pending":
            with self.server.lock:
                rows = self.server.db.execute(
                    "SELECT id, chat_id, content, source, created_at FROM pending_messages ORDER BY created_at"
                ).fetchall()
                self.server.db.executemany("DELETE FROM pending_messages WHERE id = ?", [(r[0],) for r in rows])
            messages = [{"chat_id": c, "content": t, "source": s, "created_at": at} for (_, c, t, s, at) in rows]
            return self.reply(200, {"messages": messages})
        if path.startswith("/files/"):
            return self.file(urllib.parse.unquote(path[len("/files/"):]))
        self.reply(404, {"detail": "Not Found"})

    def file(self, relative):
        target = os.path.realpath(os.path.join(WORKSPACE, relative))
        if target != WORKSPACE and not target.startswith(WORKSPACE + os.sep):
            return self.reply(403, {"error": f"Path escapes workspace boundary: {relative}"})
        if not os.path.isfile(target):
            return self.reply(403, {"error": f"File does not exist: {relative}"})
        if os.path.basename(target) in SENSITIVE:
            return self.reply(403, {"error": f"Access to sensitive file blocked: {os.path.basename(target)}"})
        with open(target, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Disposition", f'attachment; filename="{os.path.basename(target)}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_DELETE(self):
        if not self.authorized():
            return
        path = self.path_only()
        if path.startswith("/chat/") and path.count("/") == 2:
            chat_id = urllib.parse.unquote(path[len("/chat/"):])
            with self.server.lock:
                deleted = self.server.db.execute("DELETE FROM messages WHERE chat_id = ?", (chat_id,)).rowcount
            return self.reply(200, {"status": "ok", "deleted": deleted})
        self.reply(404, {"detail": "Not Found"})

    def do_POST(self):
        if not self.authorized():
            return
        if self.path_only() != "/chat":
            return self.reply(404, {"detail": "Not Found"})
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"null")
            message, chat_id = request["message"], request["chat_id"]
            if not isinstance(message, str) or not isinstance(chat_id, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return self.reply(422, {"detail": [{"msg": "message and chat_id are required strings"}]})
        answer = f"{NAME} heard: {message}"
        with self.server.lock:
            self.server.db.execute(
                "INSERT INTO messages (chat_id, role, content, created_at) VALUES (?, 'user', ?, ?)",
                (chat_id, message, now()),
            )
            self.server.db.execute(
                "INSERT INTO messages (chat_id, role, content, created_at) VALUES (?, 'assistant', ?, ?)",
                (chat_id, answer, now()),
            )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for event in ({"type": "keepalive"}, {"type": "text", "content": answer}, {"type": "done"}):
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True


def seed(path):
    rows = json.load(sys.stdin)
    db = open_db(path)
    for m in rows.get("history", []):
        db.execute(
            "INSERT INTO messages (chat_id, role, content, created_at) VALUES (?, ?, ?, ?)",
            (m["chat_id"], m["role"], m["content"], now()),
        )
    for p in rows.get("pending", []):
        db.execute(
            "INSERT INTO pending_messages (chat_id, content, source, created_at) VALUES (?, ?, ?, ?)",
            (p["chat_id"], p["content"], p["source"], now()),
        )
    db.close()


def history(path):
    db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)
    rows = db.execute("SELECT chat_id, role, content FROM messages ORDER BY created_at, id").fetchall()
    json.dump([{"chat_id": c, "role": r, "content": t} for (c, r, t) in rows], sys.stdout)


def main():
    args = sys.argv[1:]
    if args[:1] == ["--seed"]:
        return seed(os.environ["DB_PATH"])
    if args[:1] == ["--history"]:
        return history(os.environ["DB_PATH"])
    if not SECRET:
        raise SystemExit("AGENT_SECRET is required")
    host, port = "127.0.0.1", 8000
    for i, arg in enumerate(args):
        if arg == "--host":
            host = args[i + 1]
        elif arg == "--port":
            port = int(args[i + 1])
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.db = open_db(os.environ.get("DB_PATH", "agent.db"))
    server.lock = threading.Lock()
    server.serve_forever()


main()

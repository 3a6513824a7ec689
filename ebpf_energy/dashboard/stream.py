"""Frames pushed to every open page as server-sent events.

Each frame is encoded once, when published, and kept for the last hour (at
most ``keep`` frames), so a page that opens late draws the past at once. A
page that reconnects sends the id of the last frame it got (``Last-Event-ID``,
``RUN:SEQ``): from the same run it gets only what it missed; from an earlier
run (the server restarted) it gets a ``hello`` with the new run id, drops what
it had and gets this run's history. A comment line every ``keepalive_s``
seconds keeps proxies from closing an idle stream and lets the server notice a
page that went away.
"""

import json
import os
import threading
from collections import deque
from typing import Iterator, Optional

HISTORY_S = 3600.0
RETRY_MS = 1000  # how soon a page tries again after the stream broke


class EventStream:
    def __init__(self, hello: dict, keep: int = 3600, history_s: float = HISTORY_S, keepalive_s: float = 15.0):
        self.run = os.urandom(6).hex()
        self.history_s = history_s
        self.keepalive_s = keepalive_s
        self._hello = dict(hello, run=self.run, history_s=history_s)
        self._frames: deque = deque(maxlen=keep)  # (seq, t, encoded event)
        self._cond = threading.Condition()
        self._closed = False
        self.clients = 0

    def publish(self, frame: dict) -> None:
        data = json.dumps(frame, separators=(",", ":"), default=str)
        event = f"id: {self.run}:{frame['seq']}\nevent: frame\ndata: {data}\n\n".encode()
        with self._cond:
            self._frames.append((frame["seq"], frame["t"], event))
            while self._frames and self._frames[0][1] < frame["t"] - self.history_s:
                self._frames.popleft()
            self._cond.notify_all()

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _after(self, seq: int) -> list:
        """Encoded frames newer than ``seq`` (seqs are consecutive: no scan)."""
        if not self._frames:
            return []
        first = self._frames[0][0]
        return [e for _, _, e in list(self._frames)[max(0, seq - first + 1):]]

    def events(self, last_event_id: Optional[str] = None) -> Iterator[bytes]:
        run, _, seq = (last_event_id or "").partition(":")
        sent = int(seq) if run == self.run and seq.isdigit() else 0
        yield (f"retry: {RETRY_MS}\nevent: hello\ndata: {json.dumps(self._hello)}\n\n").encode()
        while True:
            with self._cond:
                if not self._closed and (not self._frames or self._frames[-1][0] <= sent):
                    self._cond.wait(self.keepalive_s)
                if self._closed:
                    return
                batch = self._after(sent)
                if batch:
                    sent = self._frames[-1][0]
            yield b"".join(batch) if batch else b": keepalive\n\n"

    def wsgi(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                                  ("X-Accel-Buffering", "no")])
        return self._counted(self.events(environ.get("HTTP_LAST_EVENT_ID")))

    def _counted(self, it):
        with self._cond:
            self.clients += 1
        try:
            yield from it
        finally:
            with self._cond:
                self.clients -= 1

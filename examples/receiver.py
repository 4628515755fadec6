"""A receiver for trying Syndicate on one machine: ``python3 examples/receiver.py [PORT]``.

It listens on 127.0.0.1 (port 9000 by default), prints every request it gets (webhook
deliveries and pings, WebSub notifications) and answers 204; a WebSub verification
(``GET ?hub.challenge=...``) is answered with the challenge, so subscriptions are
confirmed. Standard library only. The service must be allowed to reach loopback
addresses: ``SYNDICATE_ALLOW_PRIVATE_TARGETS=1 make serve`` (development only).
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SHOWN_HEADERS = ("webhook-id", "webhook-signature", "x-hub-signature", "content-type")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        challenge = parse_qs(urlsplit(self.path).query).get("hub.challenge", [""])[0]
        print(f"receiver: GET {self.path}", flush=True)
        body = challenge.encode()
        self.send_response(200 if challenge else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        shown = " ".join(f"{h}={self.headers[h]}" for h in SHOWN_HEADERS if h in self.headers)
        print(f"receiver: POST {self.path} {shown}", flush=True)
        print(f"  {body[:300].decode('utf-8', 'replace')}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request is printed above


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    with ThreadingHTTPServer(("127.0.0.1", port), Handler) as server:
        print(f"receiver: listening on http://127.0.0.1:{port}", flush=True)
        server.serve_forever()

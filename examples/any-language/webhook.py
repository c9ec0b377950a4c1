#!/usr/bin/env python3
"""Your application's side of Myxi's webhooks, standard library only.

    python3 webhook.py          # http://localhost:3000 (PORT=... for another)

POST /myxi/actions/say-hello: the SayHello action (myxi.toml), answered
    with the events to send to that client.
POST /myxi/subscribe: the "orders" exchange's policy: a user may subscribe
    to the routing keys that start with their name ("alice-1").
With MYXI_WEBHOOK_SECRET set, requests without it are refused.
"""
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("MYXI_WEBHOOK_SECRET", "")


class Webhooks(BaseHTTPRequestHandler):
    def do_POST(self):
        if SECRET and self.headers.get("Authorization") != "Bearer " + SECRET:
            return self.answer(401, {})
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/myxi/actions/say-hello":
            name = request["payload"].get("name") or request["user"]
            return self.answer(200, {"events": [{"event": "Hello", "payload": {"text": f"Hello, {name}"}}]})
        if self.path == "/myxi/subscribe":
            user = request["user"]
            return self.answer(200, {"allow": user is not None and request["routing_key"].startswith(f"{user}-")})
        self.answer(404, {})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "3000"))
    print(f"webhooks on http://localhost:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Webhooks).serve_forever()

"""The framework ceiling: a bare Flask app under gunicorn with the service's own settings.

It parses the JSON body (orjson, as the service does) and answers ``{"cards": []}``.
Its gunicorn configuration and its workers' garbage-collector settings are the ones
``cds-service serve`` runs with (``cds_service.serving``, from the same ``CDS_*``
settings), so the only difference from the service is the work done per request.

    python bench/bare_app.py [--host 127.0.0.1] [--port 8081] [--workers N]
"""

from __future__ import annotations

import argparse
import sys

import orjson
from flask import Flask
from flask import Response
from flask import request
from gunicorn.app.base import BaseApplication

from cds_service.config import Settings
from cds_service.serving import gunicorn_settings
from cds_service.serving import tune_garbage_collector


def create_bare_app(max_body_bytes: int) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes

    @app.post("/cds-services/<service_id>")
    def call(service_id: str) -> Response:
        data = orjson.loads(request.get_data(cache=False))
        if not isinstance(data, dict):
            return Response(b'{"error":"not an object"}', status=400, mimetype="application/json")
        return Response(orjson.dumps({"cards": []}), mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(orjson.dumps({"status": "ok"}), mimetype="application/json")

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers))
                 if v is not None}
    settings = Settings(**overrides)
    config = gunicorn_settings(settings)

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in config.items():
                self.cfg.set(key, value)

        def load(self):
            app = create_bare_app(settings.max_body_bytes)
            tune_garbage_collector()
            return app

    Application().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

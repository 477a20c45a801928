"""Flask application factory: configuration, the service objects, routes, CORS, error handling."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from flask import Response
from flask import request

from ..auth import ClientAuthenticator
from ..catalog import Catalog
from ..catalog import bundled_policy_dir
from ..config import Settings
from ..errors import register_error_handlers
from ..service import HookService
from ..store import Store
from .routes import bp


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    """Create the app. Loads and validates every policy once, here, not per request."""
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    catalog = Catalog.load(settings.policy_dir or bundled_policy_dir())
    if store is None:
        store = settings.open_store()
        store.migrate()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    executor = ThreadPoolExecutor(max_workers=settings.fhir_concurrency * settings.threads,
                                  thread_name_prefix="fhir")
    app.extensions["cds"] = HookService(settings, catalog, store, executor)
    if settings.require_client_jwt:
        app.extensions["cds_auth"] = ClientAuthenticator(settings.trusted_clients, store.claim_token_id,
                                                         settings.fhir_connect_timeout, settings.fhir_read_timeout)
    app.register_blueprint(bp)
    register_error_handlers(app)

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        allowed = settings.cors_origins
        if "*" in allowed:
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif origin and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Accept"
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    return app

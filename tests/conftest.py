import json
from pathlib import Path

import pytest

from cds_service.catalog import Catalog
from cds_service.catalog import bundled_policy_dir
from cds_service.config import Settings
from cds_service.web.app import create_app

pytest_plugins = ["tests.support.fhir_server", "tests.support.postgres"]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "fhir_fixtures"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The bundled policies, payers and finding codes (cards/)."""
    return Catalog.load(bundled_policy_dir())


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", hook_deadline_seconds=2.0, fhir_read_timeout=1.0)


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.extensions["cds"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_client(tmp_path):
    """Build a test client with non-default settings; every app is closed after the test."""
    apps = []

    def build(**overrides):
        overrides.setdefault("data_dir", tmp_path / "data")
        app = create_app(Settings(**overrides))
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        app.extensions["cds"].close()


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8-sig"))


def fixture_request(name: str) -> dict:
    return load_json(FIXTURES / "requests" / f"{name}.order-sign.json")

import pytest

from cds_service.catalog import Catalog
from cds_service.catalog import bundled_policy_dir

pytest_plugins = ["tests.support.fhir_server", "tests.support.postgres"]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The bundled policies, payers and finding codes (cards/)."""
    return Catalog.load(bundled_policy_dir())

"""Settings from environment variables (``CDS_*``) and, optionally, a TOML file (``CDS_CONFIG_FILE``).

Defaults are for a developer laptop: loopback only, bundled policies, SQLite in
``./data``. Production sets the FHIR allowlist, database URL and CORS origins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated
from typing import Any
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field
from pydantic import field_validator
from pydantic import model_validator
from pydantic_settings import BaseSettings
from pydantic_settings import NoDecode
from pydantic_settings import PydanticBaseSettingsSource
from pydantic_settings import SettingsConfigDict
from pydantic_settings import TomlConfigSettingsSource

from .auth import TrustedClient
from .store import Store
from .store import default_sqlite_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(2, ge=1, description="gunicorn worker processes")
    threads: int = Field(4, ge=1, description="request threads per worker")

    policy_dir: Path | None = Field(None, description="Policy directory (default: the bundled cards/)")
    data_dir: Path = Field(Path("data"), description="Where the default SQLite database lives")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/cds-service.sqlite3")
    sqlite_synchronous: Literal["normal", "full"] = Field(
        "normal", description="SQLite: 'full' also survives power loss with the last commits (see Store.from_url)"
    )

    hook_deadline_seconds: float = Field(4.0, gt=0, description="Budget for gathering evidence (CRD allows 5 s)")
    fhir_connect_timeout: float = Field(1.0, gt=0)
    fhir_read_timeout: float = Field(3.0, gt=0)
    fhir_page_limit: int = Field(10, ge=1, description="Bundle.link[next] pages followed per query")
    fhir_page_size: int = Field(100, ge=1, le=1000, description="_count sent on searches")
    fhir_concurrency: int = Field(8, ge=1, description="Parallel FHIR queries per hook call")
    fhir_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1", "http://localhost", "http://[::1]"],
        description="FHIR base URL prefixes the service may contact (scheme://host[:port][/path])",
    )
    fhir_allow_anonymous: bool = Field(
        True, description="Query an allowlisted fhirServer without a token (CDS Hooks Sandbox open servers)"
    )

    require_client_jwt: bool = Field(
        False, description="Require the CDS client's signed JWT on CDS Hooks calls and assertion reads"
    )
    trusted_clients: list[TrustedClient] = Field(
        default_factory=list, description="Issuers whose JWTs are accepted, with their JWKS (URL or file)"
    )

    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    public_base_url: str | None = Field(None, description="Absolute base for links in cards (default: the request's)")
    log_level: str = "INFO"

    @field_validator("fhir_allowlist", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("fhir_allowlist")
    @classmethod
    def _absolute_prefixes(cls, value: list[str]) -> list[str]:
        for entry in value:
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"allowlist entry '{entry}' must be an absolute http(s) URL prefix")
        return value

    @model_validator(mode="after")
    def _clients_when_required(self) -> "Settings":
        if self.require_client_jwt and not self.trusted_clients:
            raise ValueError("require_client_jwt is on but no trusted_clients are configured")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CDS_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def resolved_database_url(self) -> str:
        return self.database_url or default_sqlite_url(self.data_dir)

    def open_store(self) -> Store:
        """The Store these settings describe (no connection is opened yet)."""
        return Store.from_url(self.resolved_database_url(), sqlite_synchronous=self.sqlite_synchronous)

"""CDS client authentication (CDS Hooks 2.0 "Trusting CDS Clients") with CDS_REQUIRE_CLIENT_JWT on."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid

import jwt
import pytest
import requests
import responses
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from cds_service.config import Settings
from cds_service.store import default_sqlite_url
from tests.conftest import FIXTURES
from tests.conftest import load_json

EHR = "https://ehr.example.org"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
OFFLINE = "https://offline-ehr.example.org"
BASE = "http://localhost"
SERVICE = f"{BASE}/cds-services/order-sign-crd"
REQUEST = load_json(FIXTURES / "requests" / "mbb-seed-case.order-sign.json")


class Signer:
    """An EHR's signing key and its JWKS entry."""

    def __init__(self, kid: str, alg: str = "ES384"):
        self.kid, self.alg = kid, alg
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048) if alg.startswith(("RS", "PS")) \
            else ec.generate_private_key(ec.SECP384R1())
        public = jwt.algorithms.get_default_algorithms()[alg].to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = public | {"kid": kid, "alg": alg, "use": "sig"}

    def token(self, aud: str = SERVICE, iss: str = EHR, lifetime: int = 300, headers: dict | None = None,
              **claims) -> str:
        now = int(time.time())
        payload = {"iss": iss, "aud": aud, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())} | claims
        head = {"kid": self.kid, "typ": "JWT", "jku": JWKS_URL} | (headers or {})
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=head)


@pytest.fixture
def signer() -> Signer:
    return Signer("ehr-key-1")


@pytest.fixture
def jwks(signer):
    """The EHR's JWKS endpoint (mocked with responses); tests may change the served keys."""
    served = {"keys": [signer.jwk]}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.GET, JWKS_URL, callback=lambda request: (200, {}, json.dumps(served)))
        yield served, mock


@pytest.fixture
def offline() -> Signer:
    """A client whose keys were exchanged out of band (a JWKS file) and which must name its tenant."""
    return Signer("offline-1")


@pytest.fixture
def client(make_client, jwks, offline, tmp_path):
    offline_keys = tmp_path / "offline-jwks.json"
    offline_keys.write_text(json.dumps({"keys": [offline.jwk]}))
    return make_client(require_client_jwt=True, trusted_clients=[
        {"iss": EHR, "jwks_url": JWKS_URL},
        {"iss": OFFLINE, "jwks_file": str(offline_keys), "tenant": "hospital-a"},
    ])


def call(client, token: str | None, path: str = "/cds-services/order-sign-crd", body: dict = REQUEST):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(path, json=body, headers=headers)


def assert_refused(response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"] == [{"severity": "error", "code": "login",
                                 "diagnostics": "a valid client JWT is required"}]  # never why


def test_a_signed_call_is_answered(client, signer):
    response = call(client, signer.token())
    assert response.status_code == 200
    assert response.get_json()["cards"]


def test_discovery_feedback_and_assertion_reads_need_the_jwt_too(client, signer):
    assert_refused(client.get("/cds-services"))
    assert client.get("/cds-services", headers={
        "Authorization": f"Bearer {signer.token(aud=f'{BASE}/cds-services')}"}).status_code == 200
    feedback = {"feedback": [{"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-11-21T10:00:00Z"}]}
    feedback_path = "/cds-services/order-sign-crd/feedback"
    assert_refused(call(client, None, feedback_path, feedback))
    assert call(client, signer.token(aud=BASE + feedback_path), feedback_path, feedback).status_code == 200
    assert_refused(client.get("/coverage-assertions/x"))
    token = signer.token(aud=f"{BASE}/coverage-assertions/x")
    assert client.get("/coverage-assertions/x", headers={"Authorization": f"Bearer {token}"}).status_code == 404


def test_public_artefacts_health_and_cors_preflight_need_no_jwt(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/fhir/Questionnaire/sclerotherapy").status_code == 200
    preflight = client.options("/cds-services/order-sign-crd", headers={
        "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt"])
def test_a_missing_or_malformed_authorization_is_refused(client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    assert_refused(client.post("/cds-services/order-sign-crd", json=REQUEST, headers=headers))


@pytest.mark.parametrize("case", ["other endpoint", "other host", "expired", "too long-lived", "no jti",
                                  "untrusted issuer", "other jku", "unknown kid", "tenant missing"])
def test_invalid_tokens_are_refused(client, signer, offline, case):
    token = {
        "other endpoint": lambda: signer.token(aud=f"{BASE}/cds-services/order-select-crd"),
        "other host": lambda: signer.token(aud="https://elsewhere.example/cds-services/order-sign-crd"),
        "expired": lambda: signer.token(iat=int(time.time()) - 900, exp=int(time.time()) - 600),
        "too long-lived": lambda: signer.token(lifetime=7200),
        "no jti": lambda: signer.token(jti=None),
        "untrusted issuer": lambda: signer.token(iss="https://attacker.example"),
        "other jku": lambda: signer.token(headers={"jku": "https://attacker.example/jwks.json"}),
        "unknown kid": lambda: signer.token(headers={"kid": "ehr-key-9"}),
        "tenant missing": lambda: offline.token(iss=OFFLINE, headers={"jku": None}),
    }[case]()
    assert_refused(call(client, token))


def test_a_token_signed_by_another_key_with_the_same_kid_is_refused(client):
    assert_refused(call(client, Signer("ehr-key-1").token()))


def test_none_and_hmac_algorithms_are_refused(client, signer):
    now = int(time.time())
    claims = {"iss": EHR, "aud": SERVICE, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": signer.kid})
    assert_refused(call(client, unsigned))
    # HS256 keyed with the public key's PEM: the classic algorithm-confusion forgery.
    pem = signer.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = b".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
                              for part in ({"alg": "HS256", "typ": "JWT", "kid": signer.kid}, claims))
    signature = base64.urlsafe_b64encode(hmac.new(pem, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    assert_refused(call(client, (signing_input + b"." + signature).decode()))


def test_a_replayed_token_is_refused(client, signer):
    token = signer.token()
    assert call(client, token).status_code == 200
    assert_refused(call(client, token))


def test_a_token_used_on_one_worker_is_refused_on_another(client, make_client, signer):
    """Workers (and instances) share the database, so a replay cannot pick another worker."""
    other_worker = make_client(require_client_jwt=True, trusted_clients=[{"iss": EHR, "jwks_url": JWKS_URL}])
    token = signer.token()
    assert call(client, token).status_code == 200
    assert_refused(call(other_worker, token))


def test_a_token_that_cannot_be_checked_for_replay_gets_503(client, signer, tmp_path):
    engine = sa.create_engine(default_sqlite_url(tmp_path / "data"))  # the database make_client set up
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE client_token")
    engine.dispose()
    response = call(client, signer.token())
    assert response.status_code == 503
    assert response.get_json()["issue"][0]["code"] == "transient"


def test_a_rotated_key_is_fetched_and_the_jwks_is_not_fetched_per_call(client, signer, jwks, monkeypatch):
    served, mock = jwks
    for _ in range(3):
        assert call(client, signer.token()).status_code == 200
    assert len(mock.calls) == 1
    rotated = Signer("ehr-key-2", alg="RS384")
    served["keys"] = [signer.jwk, rotated.jwk]
    # Unknown kids re-read the JWKS at most every 30 s, so a flood of them cannot hammer the EHR.
    assert_refused(call(client, rotated.token()))
    assert len(mock.calls) == 1
    started = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: started + 31)
    assert call(client, rotated.token()).status_code == 200
    assert len(mock.calls) == 2
    assert call(client, signer.token()).status_code == 200  # the old key still works until it leaves the JWKS


def test_a_key_declared_for_one_algorithm_is_not_used_with_another(client, jwks):
    served, _ = jwks
    signer = Signer("ehr-key-3", alg="RS384")
    served["keys"].append(signer.jwk | {"alg": "RS256"})
    assert_refused(call(client, signer.token()))


def test_an_unreachable_jwks_endpoint_gives_401_not_500(make_client, signer):
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, JWKS_URL, body=requests.ConnectionError("refused"))
        client = make_client(require_client_jwt=True, trusted_clients=[{"iss": EHR, "jwks_url": JWKS_URL}])
        assert_refused(call(client, signer.token()))


def test_keys_from_a_file_and_the_tenant_claim(client, offline):
    assert_refused(call(client, offline.token(iss=OFFLINE, tenant="hospital-b")))
    assert call(client, offline.token(iss=OFFLINE, tenant="hospital-a")).status_code == 200


def test_the_token_never_reaches_the_log(client, signer, caplog):
    caplog.set_level(logging.DEBUG)
    token = signer.token(aud=f"{BASE}/cds-services/order-select-crd")
    assert_refused(call(client, token))
    assert "client JWT refused" in caplog.text
    assert token not in caplog.text and token.split(".")[2] not in caplog.text


def test_requiring_jwts_without_trusted_clients_is_a_configuration_error(tmp_path):
    with pytest.raises(ValidationError, match="no trusted_clients"):
        Settings(data_dir=tmp_path, require_client_jwt=True)
    with pytest.raises(ValidationError, match="exactly one of jwks_url or jwks_file"):
        Settings(data_dir=tmp_path, trusted_clients=[{"iss": EHR}])
    with pytest.raises(ValidationError, match="https"):
        Settings(data_dir=tmp_path, trusted_clients=[{"iss": EHR, "jwks_url": "http://ehr.example.org/jwks"}])


def test_trusted_clients_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CDS_REQUIRE_CLIENT_JWT", "true")
    monkeypatch.setenv("CDS_TRUSTED_CLIENTS", json.dumps([{"iss": EHR, "jwks_url": JWKS_URL}]))
    settings = Settings(data_dir=tmp_path)
    assert settings.require_client_jwt and settings.trusted_clients[0].jwks_url == JWKS_URL


def test_behind_a_proxy_the_audience_is_the_public_url(make_client, jwks, signer):
    public = "https://cds.example.org/prior-auth"
    client = make_client(require_client_jwt=True, public_base_url=public,
                         trusted_clients=[{"iss": EHR, "jwks_url": JWKS_URL}])
    assert_refused(call(client, signer.token(aud=SERVICE)))
    assert call(client, signer.token(aud=f"{public}/cds-services/order-sign-crd")).status_code == 200

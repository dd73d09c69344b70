"""Alembic migrations of the store's schema, shipped with the package (see store/migrate.py).

Changing the schema: edit store/schema.py, then add a revision under versions/ that brings a
database from the previous head to it.  With ``A="alembic -c
src/estkit/store/migrations/alembic.ini -x url=sqlite:////tmp/scratch.db"``: ``$A upgrade
head``, then ``$A revision --autogenerate -m WHAT`` drafts one and ``$A check`` confirms.
tests/integration/test_migrations.py fails while the two disagree, and ``create_schema``
refuses a table that no revision creates.
"""

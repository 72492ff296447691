"""Alembic environment: runs against the engine nurture hands over, never a URL from an ini."""

from alembic import context
from sqlalchemy import Connection

from nurture.models import Base


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:  # nurture.db.upgrade hands over its (locked) connection
    run(given)
    given.commit()
else:
    with context.config.attributes["engine"].connect() as connection:
        run(connection)
        connection.commit()

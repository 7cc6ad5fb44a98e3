"""Database: models, engine, migrations and the queries that move state."""

"""Database: models, engine, migrations, and every query, one module per job."""

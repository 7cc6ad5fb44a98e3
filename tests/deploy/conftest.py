"""What the deploy tests share: the compose file as ``docker compose config`` resolves it,
read once for them all."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.test_deploy_files import COMPOSE_REQUIRED_ENV, _run_compose_config


@pytest.fixture(scope="session")
def compose_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")
    result = _run_compose_config(COMPOSE_REQUIRED_ENV, empty_env_file)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config

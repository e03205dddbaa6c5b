import pytest

from tempo.config_error import ConfigError
from tempo.logging.wandb_setup import has_wandb_credentials, resolve_mode


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    return tmp_path


def test_auto_is_offline_without_credentials(clean_env):
    assert not has_wandb_credentials()
    assert resolve_mode("auto") == "offline"


def test_auto_is_online_with_an_api_key(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"


def test_auto_is_online_with_a_netrc_login(clean_env):
    netrc = clean_env / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto") == "online"


def test_environment_mode_wins(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"


def test_unknown_mode_is_a_config_error(clean_env):
    with pytest.raises(ConfigError, match="logger.mode='sometimes'"):
        resolve_mode("sometimes")

import os
import stat

import pytest

from app.core import config
from app.core.db import Database, OutdatedSchema


def test_production_refuses_to_start_and_names_what_is_missing():
    with pytest.raises(config.ConfigError) as e:
        config.load({"PORTAL_MODE": "production", "PORTAL_DATABASE_URL": "postgresql://db/portal"})
    assert "PORTAL_SECRET_KEY" in str(e.value) and "PORTAL_BROKER_URL" in str(e.value)
    assert "PORTAL_ENCRYPTION_KEY" in str(e.value)
    assert "PORTAL_DATABASE_URL" not in str(e.value)


def test_production_needs_an_omero_host():
    with pytest.raises(config.ConfigError, match="PORTAL_OMERO_HOST"):
        config.load({"PORTAL_MODE": "production", "PORTAL_SECRET_KEY": "k" * 40, "PORTAL_ENCRYPTION_KEY": "e" * 40,
                     "PORTAL_DATABASE_URL": "postgresql://db/p", "PORTAL_BROKER_URL": "redis://r"})


def test_embedded_defaults_keep_everything_in_the_data_dir(tmp_path):
    loaded = config.load({"PORTAL_DATA_DIR": str(tmp_path)})
    assert loaded["DATABASE_URL"] == f"sqlite:///{tmp_path / 'portal.sqlite'}"
    assert loaded["BROKER_URL"].startswith("sqla+sqlite:///") and loaded["OMERO_BACKEND"] == "embedded"
    secret = tmp_path / "secret_key"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    again = config.load({"PORTAL_DATA_DIR": str(tmp_path)})
    assert again["SECRET_KEY"] == loaded["SECRET_KEY"] and again["ENCRYPTION_KEY"] == loaded["ENCRYPTION_KEY"]  # kept
    assert stat.S_IMODE(os.stat(tmp_path / "encryption_key").st_mode) == 0o600
    assert loaded["ENCRYPTION_KEY"] != loaded["SECRET_KEY"]


def test_unknown_mode_is_refused():
    with pytest.raises(config.ConfigError, match="PORTAL_MODE"):
        config.load({"PORTAL_MODE": "prod"})


def test_every_setting_is_in_the_readme():
    readme = (config.ROOT / "README.md").read_text()
    missing = [s.name for s in config.SETTINGS if f"`{s.name}`" not in readme]
    assert not missing, f"README's settings table lacks {missing}: paste `upload-portal settings`"


def test_the_app_refuses_an_outdated_schema(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    with pytest.raises(OutdatedSchema, match="upload-portal db upgrade"):
        db.check_schema()
    db.upgrade()
    db.check_schema()


def test_microscope_names_are_read_as_pairs_and_a_bad_pair_is_named():
    loaded = config.load({"PORTAL_MICROSCOPE_NAMES": "TALOS-12TAN18C=Talos L120C; Krios 3 = Krios G4"})
    assert loaded["MICROSCOPE_NAMES"] == {"TALOS-12TAN18C": "Talos L120C", "Krios 3": "Krios G4"}
    with pytest.raises(config.ConfigError, match="'Titan'"):
        config.load({"PORTAL_MICROSCOPE_NAMES": "Titan"})

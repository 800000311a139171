"""Last-used widget settings, remembered between napari sessions.

One small JSON file in the user's config directory (``platformdirs``), one section per
widget. Reading never fails: a missing, unreadable or foreign file gives empty settings,
because a settings problem must never stop the plugin from opening.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Environment variable that redirects the settings file (tests, portable installs).
ENV_DIR = "NAPARI_UNET_ATT_CONFIG_DIR"
FILENAME = "settings.json"


def settings_path() -> Path:
    """Where the settings file lives (``$NAPARI_UNET_ATT_CONFIG_DIR`` or the user config dir)."""
    override = os.environ.get(ENV_DIR)
    if override:
        return Path(override) / FILENAME
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-unet-att", appauthor=False)) / FILENAME


def _read_all() -> dict[str, Any]:
    try:
        data = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_settings(section: str) -> dict[str, Any]:
    """The saved settings of one widget (``{}`` when none were saved).

    Parameters
    ----------
    section : str
        Widget name, e.g. ``'train'``.
    """
    value = _read_all().get(section, {})
    return value if isinstance(value, dict) else {}


def save_settings(section: str, values: dict[str, Any]) -> None:
    """Replace one widget's saved settings; written atomically, errors ignored.

    Values must be JSON-serialisable (numbers, strings, booleans, lists, None).
    """
    path = settings_path()
    data = _read_all()
    data[section] = values
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written settings file
    except OSError:
        pass  # read-only home, full disk: forgetting settings is acceptable

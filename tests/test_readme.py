"""The README's names of menus and docks are the ones the app shows (they drifted once)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MANIFEST = yaml.safe_load((ROOT / "src" / "napari_unet_att" / "napari.yaml").read_text(encoding="utf-8"))
MENU_PATH = re.compile(r"\*((?:File|Plugins|Layers|View|Window) > [^*]+)\*")
DOCK_ITEM = re.compile(r"^- \*\*([^*]+)\*\*:", re.MULTILINE)


def _menu_paths(menu, path: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Every path to every action under ``menu`` (with the submenus on the way)."""
    menu.aboutToShow.emit()  # napari fills some menus (Open Sample) when they are about to show
    found = set()
    for action in menu.actions():
        here = (*path, action.text().replace("&", ""))
        found.add(here)
        if action.menu() is not None:
            found |= _menu_paths(action.menu(), here)
    return found


def test_readme_menu_paths_exist_in_the_app(make_napari_viewer):
    viewer = make_napari_viewer()
    bar = viewer.window._qt_window.menuBar()  # (test only) the real menus the user clicks
    app = set()
    for action in bar.actions():
        if action.menu() is not None:
            app |= _menu_paths(action.menu(), (action.text().replace("&", ""),))
    cited = [tuple(part.strip() for part in m.split(">")) for m in MENU_PATH.findall(README)]
    assert len(cited) >= 3, "the README should say where the plugin's menus are"
    for path in cited:
        assert path in app, f"README cites *{' > '.join(path)}*, which the app does not show"


def test_readme_dock_names_are_the_manifest_widget_names():
    widgets = {w["display_name"] for w in MANIFEST["contributions"]["widgets"]}
    in_napari = README.split("## In napari", 1)[1].split("\n## ", 1)[0]
    docks = set(DOCK_ITEM.findall(in_napari))
    assert docks == widgets
    assert f"*Plugins > {MANIFEST['display_name']}*" in README
    assert f"*File > Open Sample > {MANIFEST['display_name']}*" in README

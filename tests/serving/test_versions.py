"""Version discovery and swapping, with a stand-in loader (no TensorFlow)."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

from pipeline.serving.versions import SAVED_MODEL_FILE, ModelLoadError, VersionManager

BROKEN = "broken"


class FakeLoader:
    """Loads any folder with a saved_model.pb, unless it holds a file named `broken`."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, path: str, version: int):
        self.calls.append(version)
        if (Path(path) / BROKEN).exists():
            raise ModelLoadError("broken on purpose")
        return types.SimpleNamespace(version=version, path=path)


def _push(root: Path, version: int, broken: bool = False) -> Path:
    folder = root / str(version)
    (folder / "variables").mkdir(parents=True)
    (folder / SAVED_MODEL_FILE).write_bytes(b"model")
    if broken:
        (folder / BROKEN).write_text("x")
    return folder


def _states(manager: VersionManager) -> dict[int, str]:
    return {s.version: s.state for s in manager.statuses()}


def test_versions_are_swapped_in_only_once_stable_and_loadable(tmp_path):
    loader = FakeLoader()
    manager = VersionManager(str(tmp_path), loader=loader)
    manager.scan(wait_until_stable=False)
    assert manager.current is None and manager.statuses() == []

    _push(tmp_path, 1)
    (tmp_path / "not-a-version").mkdir()
    manager.scan(wait_until_stable=False)
    assert manager.current.version == 1 and _states(manager) == {1: "AVAILABLE"}

    # A new version is loaded on the second scan that sees it unchanged.
    _push(tmp_path, 2)
    manager.scan()
    assert manager.current.version == 1 and _states(manager)[2] == "START"
    manager.scan()
    assert manager.current.version == 2
    assert _states(manager) == {2: "AVAILABLE", 1: "END"}

    # A folder still being copied (no saved_model.pb yet) is not loaded.
    (tmp_path / "4").mkdir()
    manager.scan()
    manager.scan()
    assert manager.current.version == 2 and _states(manager)[4] == "START"
    shutil.rmtree(tmp_path / "4")
    manager.scan()
    assert 4 not in _states(manager)

    # A broken version is reported, keeps the working one, and is retried only if it changes.
    folder = _push(tmp_path, 3, broken=True)
    manager.scan()
    manager.scan()
    status = manager.status(3)
    assert status.state == "END" and status.error_message == "broken on purpose"
    assert status.error_code != "OK" and manager.current.version == 2
    calls = len(loader.calls)
    manager.scan()
    manager.scan()
    assert len(loader.calls) == calls
    (folder / BROKEN).unlink()
    manager.scan()
    manager.scan()
    assert manager.current.version == 3 and manager.status(3).state == "AVAILABLE"


def test_removing_the_served_folder_rolls_back_to_the_highest_remaining(tmp_path):
    manager = VersionManager(str(tmp_path), loader=FakeLoader())
    _push(tmp_path, 1)
    _push(tmp_path, 2)
    manager.scan(wait_until_stable=False)
    assert manager.current.version == 2
    shutil.rmtree(tmp_path / "2")
    manager.scan()
    manager.scan()
    assert manager.current.version == 1
    assert _states(manager) == {1: "AVAILABLE"}


def test_background_watch_picks_up_a_new_version(tmp_path):
    import time

    manager = VersionManager(str(tmp_path), poll_seconds=0.05, loader=FakeLoader())
    _push(tmp_path, 1)
    manager.start()
    try:
        assert manager.current.version == 1
        _push(tmp_path, 7)
        deadline = time.monotonic() + 10
        while manager.current.version != 7 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert manager.current.version == 7
    finally:
        manager.stop()


def test_a_stray_folder_is_ignored_with_one_warning(tmp_path, caplog):
    loader = FakeLoader()
    _push(tmp_path, 1)
    (tmp_path / "\u00b2").mkdir()
    (tmp_path / "latest").mkdir()
    manager = VersionManager(str(tmp_path), loader=loader)
    with caplog.at_level("WARNING", logger="pipeline.serving.versions"):
        manager.scan(wait_until_stable=False)
        _push(tmp_path, 2)
        manager.scan(wait_until_stable=False)
    assert manager.current.version == 2
    warnings = [r.getMessage() for r in caplog.records if "ignoring folder" in r.getMessage()]
    assert len(warnings) == 2 and any("latest" in w for w in warnings)


def test_an_empty_version_folder_fails_after_the_timeout(tmp_path):
    import time

    _push(tmp_path, 1)
    (tmp_path / "2").mkdir()
    manager = VersionManager(str(tmp_path), loader=FakeLoader(), empty_timeout_seconds=0.2)
    manager.scan(wait_until_stable=False)
    assert _states(manager) == {1: "AVAILABLE", 2: "START"}
    time.sleep(0.3)
    manager.scan()
    status = manager.status(2)
    assert status.state == "END" and "saved_model.pb" in status.error_message
    # Files that come later are still loaded.
    (tmp_path / "2" / SAVED_MODEL_FILE).write_bytes(b"model")
    manager.scan()
    manager.scan()
    assert manager.current.version == 2

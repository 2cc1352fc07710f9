"""runtime.state: the state file's versions (stamps), so a Container re-parses only what changed."""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime import ContainerError, ContainerSpec
from runtime.state import ContainerState, load_state, load_state_if_changed, save_state


def _state() -> ContainerState:
    return ContainerState(spec=ContainerSpec(name="c1", argv=("true",)), image="/images/busybox")


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    st = _state()
    st.pid, st.status = 42, "running"
    save_state(path, st)
    back = load_state(path)
    assert back == st
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left


def test_a_known_version_is_not_parsed_again(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    st = _state()
    stamp = save_state(path, st)
    assert load_state_if_changed(path, stamp) == (None, stamp)
    fresh, again = load_state_if_changed(path, None)
    assert fresh == st and again == stamp
    st.status, st.exit_code = "exited", 3  # another process saves a new version
    newer = save_state(path, st)
    assert newer != stamp
    changed, stamp2 = load_state_if_changed(path, stamp)
    assert changed is not None and changed.exit_code == 3 and stamp2 == newer


def test_missing_or_broken_state_is_a_container_error(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="no container state"):
        load_state_if_changed(tmp_path / "state.json", None)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ContainerError, match="unreadable"):
        load_state(tmp_path / "state.json")

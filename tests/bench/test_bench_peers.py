"""How `ringbolt bench compare` installs a missing peer on a fresh machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ringbolt.bench.peers import apt_install


@pytest.mark.skipif(os.geteuid() != 0, reason="apt_install only runs apt-get as root")
def test_a_package_missing_from_stale_lists_is_installed_after_one_update(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh machine has no package lists: the first install fails, an
    `apt-get update` fixes that, the second install succeeds. The real
    apt-get is replaced by a script that behaves that way."""
    calls = tmp_path / "calls"
    installed = tmp_path / "installed"
    fake = tmp_path / "bin" / "apt-get"
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
echo "$* $DEBIAN_FRONTEND" >> {calls}
if [ "$1" = update ]; then touch {tmp_path}/lists; exit 0; fi
if [ -e {tmp_path}/lists ]; then touch {installed}; exit 0; fi
echo "E: Unable to locate package $3" >&2; exit 100
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert apt_install("somepeer", installed.exists)
    assert calls.read_text().splitlines() == [
        "install -y somepeer noninteractive", "update noninteractive",
        "install -y somepeer noninteractive"]
    calls.unlink()
    assert apt_install("somepeer", installed.exists)  # already there: apt-get is not run
    assert not calls.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="apt_install only runs apt-get as root")
def test_a_package_apt_cannot_find_is_reported_as_not_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "apt-get"
    fake.write_text("#!/bin/sh\nexit 100\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert not apt_install("nosuchpeer", lambda: False)

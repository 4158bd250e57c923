"""The pytest plugin is loaded into every pytest run where msd-async is installed: loading
it must not import the local server or aiohttp.web."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("msd_async.testing.server", "msd_async.testing.store", "aiohttp.web")


def _imported_after(code: str) -> list[str]:
    probe = (
        f"import sys\n{code}\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [m for m in done.stdout.strip().split(",") if m]


def test_loading_the_plugin_imports_no_server() -> None:
    assert _imported_after("import msd_async.testing.pytest_plugin") == []


def test_the_plugin_is_what_the_entry_point_names() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="pytest11") if e.name == "msd_async"]
    assert entry.value == "msd_async.testing.pytest_plugin"
    assert _imported_after("from importlib.metadata import entry_points\n"
                           "[e.load() for e in entry_points(group='pytest11') "
                           "if e.name == 'msd_async']") == []


def test_the_testing_names_still_import_on_use() -> None:
    loaded = set(_imported_after("from msd_async.testing import LocalMediaStore"))
    assert loaded >= {"msd_async.testing.server", "aiohttp.web"}
    assert _imported_after("import msd_async.testing as t; t.FaultPlan") == []

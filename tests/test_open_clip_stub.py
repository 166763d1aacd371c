"""The open_clip tower against a real open_clip, on a machine without torchvision.

open_clip imports torchvision, and the dev environment has no CPU torchvision that leaves
transformers importable, so ``test_open_clip_tower_from_name_and_local_checkpoint`` in
tests/test_clip_towers.py skips there. This test runs it (and the check that gcl does not import
open_clip by itself) in a subprocess whose ``PYTHONPATH`` holds

* ``$GCL_OPEN_CLIP_SITE``: a directory with open_clip installed aside, without dependencies::

      pip install --no-deps --target /tmp/ocsite open_clip_torch ftfy
      GCL_OPEN_CLIP_SITE=/tmp/ocsite python -m pytest tests/test_open_clip_stub.py -m slow

* tests/stubs: a torchvision stub with only the names open_clip's model code imports (its
  transforms raise; gcl preprocesses images itself). See tests/stubs/README.md.

Skipped when ``GCL_OPEN_CLIP_SITE`` is unset or holds no open_clip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
STUBS = TESTS / "stubs"
NODES = ["tests/test_clip_towers.py::test_open_clip_tower_from_name_and_local_checkpoint",
         "tests/test_clip_towers.py::test_gcl_never_imports_torchvision_or_open_clip"]


def _site() -> Path:
    env = os.environ.get("GCL_OPEN_CLIP_SITE")
    if not env:
        pytest.skip("GCL_OPEN_CLIP_SITE not set (pip install --no-deps --target DIR open_clip_torch ftfy; "
                    "GCL_OPEN_CLIP_SITE=DIR)")
    site = Path(env).resolve()
    if not (site / "open_clip" / "__init__.py").is_file():
        pytest.skip(f"no open_clip in GCL_OPEN_CLIP_SITE={site}")
    return site


@pytest.mark.slow
def test_open_clip_tower_with_open_clip_installed_aside():
    site = _site()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(STUBS)]), OMP_NUM_THREADS="1")
    # the subprocess really gets this open_clip and the stub (not some other torchvision)
    probe = ("import open_clip, torchvision; assert getattr(torchvision, 'IS_GCL_TEST_STUB', False), torchvision; "
             "print(open_clip.__version__, open_clip.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1].startswith(str(site)), out.stdout
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *NODES],
                         cwd=TESTS.parent, env=env, capture_output=True, text=True)
    log = f"open_clip {out.stdout}\n{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, log
    assert f"{len(NODES)} passed" in run.stdout and "skipped" not in run.stdout, log

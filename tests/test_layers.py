"""Layers import one way and stay cheap: the loss and the index do not pull in the data layer
(pandas, pyarrow), and the text/image tower classes do not import the CLIP towers built on them."""

from __future__ import annotations

import subprocess
import sys

import pytest


def modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("package", ["gcl.losses", "gcl.index", "gcl.errors", "gcl.encoders"])
def test_importing_does_not_load_the_data_layer(package):
    loaded = modules_after(f"import {package}")
    assert package in loaded
    assert not {"pandas", "pyarrow", "gcl.data"} & loaded


def test_the_old_error_module_is_the_same_classes():
    from gcl import errors
    from gcl.data import errors as old

    assert (old.ConfigError, old.DataError, old.GCLError) == (errors.ConfigError, errors.DataError, errors.GCLError)


def test_tower_classes_do_not_import_the_clip_towers():
    loaded = modules_after("import gcl.encoders.towers, gcl.encoders.tower_factory")
    assert "gcl.encoders.clip" not in loaded


def test_the_model_classes_load_when_first_named():
    loaded = modules_after("import gcl.encoders")
    assert "torch" not in loaded and "gcl.encoders.model" not in loaded
    import gcl.encoders as enc
    from gcl.encoders.model import BiEncoder
    from gcl.encoders.multifield import MultiFieldModel

    assert (enc.BiEncoder, enc.MultiFieldModel) == (BiEncoder, MultiFieldModel)

"""TEST STUB, not torchvision: just enough for ``import open_clip`` and open_clip's model code.

See tests/stubs/README.md. Only tests/test_open_clip_stub.py puts this on sys.path, in a subprocess.
"""

__version__ = "0.0.0+gcl-test-stub"
IS_GCL_TEST_STUB = True

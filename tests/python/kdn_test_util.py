"""Shared by the Python tests: the build tree's tools (from CTest's environment), synthetic caches
made by `kdnctl synth`, and the reference decode `kdnctl export` writes."""
import os
import shutil
import subprocess
import tempfile
import unittest

KDNCTL = os.environ.get("KDNCTL", "kdnctl")


def under_ci():
    return os.environ.get("CI", "") == "true"


def require(condition, why):
    """Skips the test (saying why) unless `condition`; under CI=true a missing requirement fails
    instead, since CI installs everything these tests need."""
    if condition:
        return
    if under_ci():
        raise AssertionError("required under CI=true: " + why)
    raise unittest.SkipTest("skipped: " + why)


def have_module(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def synth(path, *, tokens=300, codec="raw", seed=1, position=0, chunk_tokens=None,
          shape=("--layers", "3", "--kv-heads", "2", "--head-dim", "16", "--dtype", "fp16"),
          extra=()):
    args = [KDNCTL, "synth", *shape, "--tokens", str(tokens), "--codec", codec, "--seed",
            str(seed), "--position", str(position), "-o", str(path), *extra]
    if chunk_tokens is not None:
        args += ["--chunk-tokens", str(chunk_tokens)]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return str(path)


def export(path, layer, kv, dtype):
    """The decoded block as bytes: what `kdnctl export` writes ([tokens][kv_heads][head_dim])."""
    r = subprocess.run([KDNCTL, "export", "--layer", str(layer), "--kv", kv, "--dtype", dtype,
                        str(path), "-o", "-"], check=True, stdout=subprocess.PIPE)
    return r.stdout


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kdn-py-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

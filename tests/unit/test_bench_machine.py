"""The bench's result says which interpreter ran it: the build moves every figure (pyenv's
default build ran the platform's Python 10-25 % slower than a distribution's)."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.__main__ import machine


def test_the_result_names_the_interpreter_the_services_run_on() -> None:
    found = machine()
    # the services are started with sys.executable: the venv's python, a link to the base one
    assert found["python_executable"] == os.path.realpath(sys.executable)
    assert os.path.isfile(found["python_executable"])
    assert not os.path.islink(found["python_executable"])
    assert found["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    # the build's date and compiler, as `python -VV` gives them
    version = subprocess.run(
        [sys.executable, "-VV"], capture_output=True, text=True, check=True
    ).stdout
    date = " ".join(found["python_build"].split()[1:4])  # "May 9 2026" (its day padded in both)
    assert date in " ".join(version.split()), (found["python_build"], version)
    assert found["cores"] == os.cpu_count()

"""Maps the top-level folders onto the one import package ``baton``.

The folders ``domain/``, ``projections/`` and ``adapters/`` stay at the top of the repository (the
layout is part of the design), but install as ``baton.domain``, ``baton.projections`` and
``baton.adapters``: the bare names belong to other distributions on PyPI (``adapters`` is
AdapterHub's), and two distributions owning one directory of site-packages overwrite each other.
Everything else about the project is in ``pyproject.toml``.
"""

from setuptools import find_packages, setup

FOLDERS = ("domain", "projections", "adapters")

setup(
    package_dir={f"baton.{folder}": folder for folder in FOLDERS},
    packages=[
        f"baton.{package}"
        for package in find_packages(include=[f"{folder}*" for folder in FOLDERS])
    ],
    package_data={
        **{f"baton.{folder}": ["py.typed"] for folder in FOLDERS},
        # The dashboard's pages, scripts and styles, served from the installed package.
        "baton.adapters.ui": ["static/*.*", "static/pages/*.*"],
    },
)

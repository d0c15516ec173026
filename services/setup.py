"""The package list of pixmesh-server (services/pyproject.toml holds everything else).

This folder is the `services` package itself, so it is mapped as such: services/runtime installs
as services.runtime, and so on, keeping the layout `python -m services.<name>` runs from. The
data beside the code (each service's SQL migrations, the inference models) is package data.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):  # type: ignore[misc]  # setuptools is untyped here
    """Leaves this script out of the `services` package it builds."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules: list[tuple[str, str, str]] = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) != ("services", "setup")]


if __name__ == "__main__":  # setuptools runs it so; importing services.setup does nothing
    subpackages = find_packages(".", exclude=["build", "build.*"])
    setup(
        packages=["services", *(f"services.{name}" for name in subpackages)],
        package_dir={"services": "."},
        package_data={"services": ["*/migrations/*.sql", "inference/models/**/*"]},
        include_package_data=False,
        cmdclass={"build_py": BuildPy},
    )

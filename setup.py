"""Ships the Hydra configs inside the package: the checkout keeps them at the top level (conf/),
an installed wheel has them as ``unet_seg.conf``, where Hydra finds them by package. Everything
else about the build is in pyproject.toml; pyproject alone cannot add a package that lives
outside the package tree to the ones it finds."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["unet_seg", "unet_seg.*"]), "unet_seg.conf"],
    package_dir={"unet_seg.conf": "conf"},
)

"""longbert-tf: ICD coding of long clinical notes with segment-wise BERT and label attention."""

import pathlib

from setuptools import find_packages, setup

ROOT = pathlib.Path(__file__).parent
REQUIREMENTS = [
    line.strip()
    for line in (ROOT / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="longbert-tf",
    version="0.1.0",
    description="ICD coding of long clinical notes with BERT segments and label attention",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # TensorFlow 2.21 and tensorflow-text 2.21.1 publish wheels for CPython 3.10 to 3.13 only;
    # .ci/resolve_check resolves the pinned stack for each version listed in the classifiers.
    python_requires=">=3.11,<3.14",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
    packages=find_packages(include=["longbert_tf", "longbert_tf.*", "data_prep", "experiments"]),
    package_data={
        "experiments": ["published_results.json"],
        # The review page's HTML, CSS and JavaScript, served from the package (no network).
        "longbert_tf.review": ["page/*"],
    },
    install_requires=REQUIREMENTS,
    # selenium drives Debian's chromium/chromium-driver in the review page's browser tests;
    # pytest-xdist runs the suite on both cores (pytest.ini).
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "ruff==0.17.6", "selenium==4.51.0"]
    },
)

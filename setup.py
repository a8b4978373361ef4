"""Builds the optional C hot path of the undo log.

``optional=True``: without a compiler the install still succeeds and the
pure-Python undo log (same format, same behaviour) is used.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "blizzard.pmem._undolog_c",
            sources=["blizzard/pmem/_undolog.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)

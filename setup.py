"""Build bn3d._kernels, with OpenMP where the compiler supports it.

OpenMP support is detected by compiling and linking a small test program with
``-fopenmp``; where that fails the extension is built without it and runs
serially (``bn3d.openmp_enabled()`` then returns False). Set
``BN3D_DISABLE_OPENMP=1`` to force a serial build.

``BN3D_SANITIZE=address,undefined`` builds the kernels with those sanitizers
(AddressSanitizer, UndefinedBehaviorSanitizer; any list ``-fsanitize=`` takes),
any report being fatal. Python itself is not instrumented, so the sanitizer's
runtime must be preloaded: ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``
(``.ci/run`` shows how).
"""

import glob
import os
import shutil
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

OPENMP_FLAGS = ["-fopenmp"]
OPTIMISATION_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-Wno-psabi"]


def sanitizer_flags() -> list[str]:
    """The flags of the sanitizers named in ``BN3D_SANITIZE`` (none when it is unset)."""
    sanitizers = os.environ.get("BN3D_SANITIZE", "").strip()
    if not sanitizers:
        return []
    return [f"-fsanitize={sanitizers}", f"-fno-sanitize-recover={sanitizers}",
            "-fno-omit-frame-pointer", "-g"]


def openmp_supported(compiler) -> bool:
    """Return whether ``compiler`` can compile and link an OpenMP program."""
    if os.environ.get("BN3D_DISABLE_OPENMP", "") not in ("", "0"):
        return False
    source = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
        """
    )
    workdir = tempfile.mkdtemp()
    try:
        path = os.path.join(workdir, "check_openmp.c")
        with open(path, "w") as file:
            file.write(source)
        objects = compiler.compile([path], output_dir=workdir, extra_postargs=OPENMP_FLAGS)
        compiler.link_executable(
            objects, "check_openmp", output_dir=workdir, extra_postargs=OPENMP_FLAGS
        )
        return True
    except Exception:  # any compile or link failure means: no OpenMP here
        return False
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class BuildExtWithOpenMP(build_ext):
    """``build_ext`` that adds OpenMP flags when the compiler supports them."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            raise RuntimeError(
                "bn3d's kernels use GCC/Clang vector extensions, which MSVC does not compile: "
                "build with GCC or Clang (MinGW-w64 or clang-cl on Windows, untested), see "
                "the installation page of the documentation")
        flags = OPTIMISATION_FLAGS + sanitizer_flags()
        link_flags = sanitizer_flags()
        if openmp_supported(self.compiler):
            flags += OPENMP_FLAGS
            link_flags += OPENMP_FLAGS
        for extension in self.extensions:
            extension.extra_compile_args = flags
            extension.extra_link_args = link_flags
            extension.define_macros.append(("BN3D_BUILD_FLAGS", '"{}"'.format(" ".join(flags))))
        super().build_extensions()


# The kernels' C (bn3d/_src): one translation unit per instruction set, and the dispatch.
KERNEL_SOURCES = sorted(glob.glob("bn3d/_src/kernels_*.c")) + ["bn3d/_src/dispatch.c"]
KERNEL_HEADERS = sorted(glob.glob("bn3d/_src/*.h"))
extensions = [
    Extension("bn3d._kernels", ["bn3d/_kernels.pyx", *KERNEL_SOURCES],
              include_dirs=["bn3d/_src"], depends=KERNEL_HEADERS),
    # The output pool is a numpy memory handler (NEP 49, numpy >= 1.22's C API).
    Extension("bn3d._output_pool", ["bn3d/_output_pool.pyx", "bn3d/_src/output_pool.c"],
              include_dirs=["bn3d/_src", numpy.get_include()],
              depends=["bn3d/_src/output_pool.h"],
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION"),
                             ("NPY_TARGET_VERSION", "NPY_1_22_API_VERSION")]),
]

setup(
    ext_modules=cythonize(extensions, language_level=3),
    cmdclass={"build_ext": BuildExtWithOpenMP},
    # The executable spec lives in spec/ and ships as the data of bn3d._spec.
    packages=[*find_packages(include=["bn3d", "bn3d.*"]), "bn3d._spec"],
    package_dir={"bn3d._spec": "spec"},
    package_data={"bn3d": ["py.typed", "*.pyi"], "bn3d._spec": ["*.yaml", "*.json"]},
)

"""Slim and recompress downloaded wheels so what a GPU host without a registry needs fits the device tool's
64 MiB working tree (``benchmarks/gpu/gpu_wheels.sh`` downloads them, ``benchmarks/gpu/gpu_check.sh`` installs them)::

    python benchmarks/gpu/carry_wheels.py DOWNLOADED_DIR .whl

Two things make them fit (measured on the 2026-11 downloads: 84.6 MiB as downloaded, 39 MiB after):

* files never used there are left out (:data:`UNUSED`): the pytriton bundle's Python 3.13 runtime and the stubs
  of other Pythons than the host's 3.12, tritonclient's second copy of perf_analyzer (``perf_client``), numpy's
  test suites;
* every member is stored LZMA-compressed, which pip reads like deflate (ELF binaries shrink about twice as much).

File modes (executable bits) are kept, and each wheel's RECORD lists exactly the files it holds.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

# distribution (as a wheel file name starts) -> files of it to leave out
UNUSED: dict[str, re.Pattern[str]] = {
    "nvidia_pytriton": re.compile(r"nvidia_pytriton\.libs/libpython3-|python_backend_stubs/3\.(8|9|10|11|13)/"),
    "tritonclient": re.compile(r"\.data/data/bin/perf_client$"),
    "numpy": re.compile(r"/tests/"),
}


def slim_wheel(source: Path, target: Path, unused: re.Pattern[str] | None) -> Path:
    """Copy the wheel ``source`` to ``target`` without the members ``unused`` matches, LZMA-compressed."""
    with zipfile.ZipFile(source) as wheel, zipfile.ZipFile(target, "w", compression=zipfile.ZIP_LZMA) as out:
        kept = [info for info in wheel.infolist() if unused is None or not unused.search(info.filename)]
        names = {info.filename for info in kept}
        for info in kept:
            data = wheel.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = _record_of(data, names)
            member = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            member.external_attr = info.external_attr  # the executable bits of tritonserver, the stub, perf_analyzer
            member.compress_type = zipfile.ZIP_LZMA
            out.writestr(member, data)
    return target


def _record_of(record: bytes, names: set[str]) -> bytes:
    """RECORD's rows for the files kept (the RECORD row itself has no hash and stays)."""
    rows = [row for row in record.decode("utf-8").splitlines() if row.split(",", 1)[0] in names]
    return ("\n".join(rows) + "\n").encode("utf-8")


def unused_of(wheel_name: str) -> re.Pattern[str] | None:
    return next((pattern for name, pattern in UNUSED.items() if wheel_name.startswith(f"{name}-")), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu/carry_wheels.py", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of downloaded wheels")
    parser.add_argument("target", type=Path, help="folder to write the slimmed wheels to (e.g. .whl)")
    args = parser.parse_args(argv)
    wheels = sorted(args.source.glob("*.whl"))
    if not wheels:
        print(f"carry_wheels: no wheels in {args.source}", file=sys.stderr)
        return 2
    args.target.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        slim = slim_wheel(wheel, args.target / wheel.name, unused_of(wheel.name))
        print(f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB -> {slim.stat().st_size / 2**20:.1f} MiB")
    total = sum(path.stat().st_size for path in args.target.glob("*.whl"))
    print(f"{args.target}: {total / 2**20:.1f} MiB of wheels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Write envs/easy2hard.yaml (the environment of `snakemake --sdm conda`) from requirements.lock.

The pins are copied in, not referenced with `-r`: Snakemake copies the YAML file alone when it
builds the environment, so a relative `-r ../requirements.lock` would not be found there.
`make lock` runs this after every re-resolution; tests/test_lock.py checks that the two agree.

    python tools/conda_env.py            # rewrite envs/easy2hard.yaml
    python tools/conda_env.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
ENV_FILE = ROOT / "envs" / "easy2hard.yaml"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")

HEADER = """\
# Generated from requirements.lock by tools/conda_env.py (`make lock`); do not edit by hand.
# For `snakemake --sdm conda`: the rules put the package (workflow/easy2hard) on PYTHONPATH
# themselves, so this environment carries only the locked dependencies. torch==X (no "+cpu")
# installs PyPI's CUDA build on a GPU node.
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def locked_pins(lock_text: str) -> list[str]:
    """The `name==version` lines of a pip-compile'd lock, in its order."""
    return [f"{m[1]}=={m[2]}" for line in lock_text.splitlines() if (m := PIN.match(line))]


def conda_env(lock_text: str) -> str:
    return HEADER + "".join(f"      - {pin}\n" for pin in locked_pins(lock_text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the environment file is up to date")
    args = parser.parse_args(argv)
    expected = conda_env(LOCK.read_text())
    if args.check:
        if ENV_FILE.read_text() != expected:
            print(
                f"{ENV_FILE.relative_to(ROOT)} is out of date with requirements.lock: run `make lock`", file=sys.stderr
            )
            return 1
        return 0
    ENV_FILE.write_text(expected)
    print(f"wrote {ENV_FILE.relative_to(ROOT)} ({len(locked_pins(LOCK.read_text()))} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

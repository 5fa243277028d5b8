"""Record what produced a result: the config, the code version (git describe), library versions."""

import importlib.metadata
import platform
import subprocess
from datetime import datetime, timezone

from easy2hard import cli
from easy2hard.io import write_json

LIBRARIES = ("easy2hard", "torch", "transformers", "tokenizers", "snakemake", "math-verify", "sympy", "deepspeed")


def git_describe(repo: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", repo, "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--repo", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from easy2hard.grading import GRADER_VERSION

    write_json(
        args.out,
        {
            "config": args.params,
            "code_version": git_describe(args.repo),
            "grader_version": GRADER_VERSION,
            "libraries": {name: version(name) for name in LIBRARIES},
            "python": platform.python_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )

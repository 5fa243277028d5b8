"""Record what produced the report: the whole config, the code version (git describe), the grader
and library versions (the run-level record; every stage also writes its own beside its outputs)."""

from easy2hard import cli, provenance
from easy2hard.io import write_json

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    write_json(args.out, provenance.record(args.params))

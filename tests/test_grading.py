"""The answer grader: normalisation, equivalence, timeouts, batch grading and clustering."""

import json
import os
import random
import string
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easy2hard import grading, grading_workers
from easy2hard.grading import (
    GRADER_VERSION,
    GradingError,
    GradingStats,
    cluster_answers,
    extract_answer,
    grade_many,
    is_equivalent,
    normalize_answer,
)

EQUIVALENT = [
    (r"\frac12", "0.5"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    ("x=5", "5"),
    (r"10\%", "10"),
    (r"5\text{ cm}", "5"),
    ("(1,2)", "(1, 2)"),
    ("1,000", "1000"),
    (r"\sqrt{8}", r"2\sqrt{2}"),
    ("[1,3)", "[1,3)"),
    (r"\text{(A)}", "A"),
    (r"90^\circ", "90"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"),
    ("x^2+2x", "x(x+2)"),
    (r"2\frac{1}{2}", r"\frac52"),
    (r"\$1,\!000.50", "1000.5"),
    (r"\text{Monday}", "monday"),
    (r"-12 \text{ or } -30", "-12, -30"),
    # thousands written with ",\!" and a space (a MATH500 gold answer is written so)
    (r"11,\! 111,\! 111,\! 100", "11111111100"),
    (r"11,\! 111,\! 111,\! 100", "11,111,111,100"),
    (r"10,\!080", "10080"),
    # percent: the sign, the escaped sign and the word
    (r"50\%", "50 percent"),
    ("50%", r"\text{50 percent}"),
    ("12.5 percent", r"12.5\%"),
    (r"50\text{ percent}", "50"),
    # a mixed number with a space is its value
    ("7 3/4", r"\frac{31}{4}"),
    ("7 3/4", "7.75"),
    (r"-2 1/2", "-2.5"),
]
NOT_EQUIVALENT = [
    ("2", "3"),
    ("(1,2)", "(2,1)"),
    ("[1,3)", "(1,3)"),
    (r"\frac{1}{2}", "2"),
    ("0.333333", r"\frac13"),
    ("2, 500", "2500"),
    (r"\sqrt{8}", r"3\sqrt{2}"),
    (r"\text{Monday}", r"\text{Mondya}"),
    (None, "5"),
    ("5", None),
    ("", "5"),
    ("5", "   "),
    (None, None),
    ("7 3/4", "73/4"),  # a mixed number, not seventy-three quarters
    ("7 3/4", r"\frac{73}{4}"),
    ("-[0,1)", "1"),  # a negated interval is no number, not even one of its endpoints
    ("-[0,1)", "0"),
    ("-[0,1)", "[0,1)"),
    ("(1,2)", "1"),
    ("50 percent", "5"),
    (r"11,\! 111", "11"),
]
PATHOLOGICAL = [
    r"10^{10^{10^{10}}}",
    "1000000!",
    "".join(random.Random(0).choices(string.printable, k=10_000)),
    "{" * 500 + "1" + "}" * 499,  # one brace short, so no normalisation step can peel it
    r"\frac{" * 250 + "1" + "}{2}" * 250,
    "\u202e\u0000\U0001f4a5\u2211\u222b\u2248\u2135\udcff\ufeff\u0301" * 50,
]


@pytest.mark.parametrize("pred, gold", EQUIVALENT)
def test_equivalent_answers(pred, gold):
    assert is_equivalent(pred, gold)
    assert is_equivalent(gold, pred)


@pytest.mark.parametrize("pred, gold", NOT_EQUIVALENT)
def test_different_answers(pred, gold):
    assert not is_equivalent(pred, gold)
    assert not is_equivalent(gold, pred)


def test_exact_cases_need_no_worker(monkeypatch):
    def no_pool(workers=None):
        raise AssertionError("the worker pool was used")

    monkeypatch.setattr(grading_workers, "shared_pool", no_pool)
    assert is_equivalent(r"\dfrac{1}{2}", "0.5")
    assert is_equivalent(r"5\text{ cm}", "5")
    assert is_equivalent(r"\text{Evelyn}", "evelyn")
    assert not is_equivalent("2", "3")
    assert not is_equivalent("0.333333", r"\frac13")
    assert grade_many([("1,000", "1000"), ("7", None)]) == [True, False]


@pytest.mark.parametrize(
    "raw, normal",
    [
        (r"\frac12", r"\frac{1}{2}"),
        (r"\tfrac 1 2", r"\frac{1}{2}"),
        (r"\sqrt2", r"\sqrt{2}"),
        (r"\frac{\sqrt3}2", r"\frac{\sqrt{3}}{2}"),
        ("y = 2x + 3", "2x+3"),
        (r"\boxed{5}.", "5"),
        ("$.5$", "0.5"),
        ("0.50", "0.5"),
        ("2.0", "2"),
        ("1/2", r"\frac{1}{2}"),
        (r"1,\!000,\!000", "1000000"),
        ("(1, 2)", "(1,2)"),
        (r"15\mbox{ cm}^2", "15"),
        ("12 inches", "12"),
        (r"\textbf{(C)}", "C"),
        (r"\left[ \frac{3}{4}, 1 \right)", r"[\frac{3}{4},1)"),
        (r"2\pi r", r"2\pi r"),
        ("  ", None),
        (None, None),
    ],
)
def test_normalize_answer(raw, normal):
    assert normalize_answer(raw) == normal


def test_extract_answer_is_the_formats_one():
    assert extract_answer("Add them.\n\nSo 1 + 1 = 2.\n\n# Answer\n\n2") == "2"
    assert extract_answer(r"So the answer is $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert extract_answer("no answer here") is None
    assert extract_answer is grading.extract_answer


def test_grader_version_names_math_verify():
    assert GRADER_VERSION.startswith("easy2hard-grader-")
    assert "math-verify" in GRADER_VERSION


def _read_rows(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_math500_reference_answers_grade_as_correct(math_dir):
    rows = _read_rows(math_dir / "test.jsonl")
    assert len(rows) == 500
    for row in rows:
        answer = normalize_answer(row["answer"])
        assert answer is not None, row["unique_id"]
        assert normalize_answer(extract_answer(row["solution"])) == answer, row["unique_id"]
        assert is_equivalent(row["answer"], row["answer"])


def test_answers_of_other_problems_are_wrong(math_dir):
    rows = _read_rows(math_dir / "test.jsonl")
    rng = random.Random(0)
    pairs = []
    for row in rng.sample(rows, 50):
        other = rng.choice(rows)
        if normalize_answer(other["answer"]) != normalize_answer(row["answer"]):
            pairs.append((other["answer"], row["answer"]))
    assert len(pairs) >= 45
    assert not any(grade_many(pairs, timeout=2.0))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("junk", PATHOLOGICAL, ids=["tower", "factorial", "garbage", "braces", "fractions", "unicode"])
def test_pathological_inputs_return_within_the_timeout(junk):
    timeout, slack = 1.0, 4.0
    start = time.monotonic()
    assert not is_equivalent(junk, "1", timeout=timeout)
    assert not is_equivalent("1", junk, timeout=timeout)
    assert time.monotonic() - start < 2 * timeout + slack
    assert isinstance(normalize_answer(junk), (str, type(None)))


@pytest.mark.timeout(60)
def test_pool_recovers_after_a_timeout():
    assert not is_equivalent("1000000!", "2", timeout=0.5)
    assert is_equivalent(r"\sqrt{8}", r"2\sqrt{2}")


def test_grade_many_agrees_with_is_equivalent():
    pairs = EQUIVALENT + NOT_EQUIVALENT
    expected = [is_equivalent(pred, gold) for pred, gold in pairs]
    assert grade_many(pairs) == expected
    assert grade_many(pairs, workers=1, progress=True) == expected
    assert grade_many([]) == []


def test_is_equivalent_from_threads():
    pairs = [(r"\sqrt{8}", r"2\sqrt{2}"), ("x^2+2x", "x(x+2)"), ("(1,2)", "(2,1)")] * 4
    with ThreadPoolExecutor(max_workers=4) as executor:
        verdicts = list(executor.map(lambda pair: is_equivalent(*pair), pairs))
    assert verdicts == [True, True, False] * 4


def test_is_equivalent_in_a_forked_child():
    assert is_equivalent(r"\sqrt{8}", r"2\sqrt{2}")  # the parent's pool and forkserver exist
    pid = os.fork()
    if pid == 0:  # child: must build its own pool; report through the exit code
        code = 1
        try:
            code = 0 if is_equivalent(r"\sqrt{12}", r"2\sqrt{3}") else 1
            grading_workers._close_pool()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert is_equivalent(r"\sqrt{8}", r"2\sqrt{2}")


def test_cluster_answers():
    answers = [r"\frac12", "3", None, "0.5", "1/2", r"\dfrac{1}{2}", "", r"\sqrt{8}"]
    answers += [r"2\sqrt2", "3."]
    assert cluster_answers(answers) == [0, 1, -1, 0, 0, 0, -1, 2, 2, 1]
    assert cluster_answers(answers) == cluster_answers(answers)
    assert cluster_answers([]) == []


_LATEX_TOKENS = list("\\{}()[]^_$%.,=-+ 0123456789xabc") + [
    r"\frac",
    r"\sqrt",
    r"\text{",
    r"\left",
    r"\right",
    r"\boxed{",
    "# Answer",
    "\n\n",
    r"^\circ",
]
_LATEX_ISH = st.lists(st.sampled_from(_LATEX_TOKENS), max_size=40).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), _LATEX_ISH))
def test_extraction_and_normalisation_never_raise(text):
    extracted = extract_answer(text)
    assert extracted is None or isinstance(extracted, str)
    normal = normalize_answer(text)
    assert normal is None or (isinstance(normal, str) and normal)


# --- any calling context ------------------------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNGUARDED = (
    "from easy2hard.grading import is_equivalent\n"
    "print(is_equivalent('x^2+2x+1', '(x+1)^2'), is_equivalent('\\\\sqrt{8}', '2\\\\sqrt{2}'),"
    " is_equivalent('\\\\sqrt{8}', '3\\\\sqrt{2}'))\n"
)


def _python(args, stdin=None, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "workflow")}
    return subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


@pytest.mark.parametrize("how", ["unguarded script", "stdin", "-c"])
def test_any_calling_context_gets_the_right_verdicts(how, tmp_path):
    """The symbolic tier from a script without a __main__ guard, code piped on stdin and `-c`:
    right verdicts, no traceback, no hang (multiprocessing children re-imported __main__)."""
    script = tmp_path / "check.py"
    script.write_text(UNGUARDED)
    args, stdin = {
        "unguarded script": ([str(script)], None),
        "stdin": (["-"], UNGUARDED),
        "-c": (["-c", UNGUARDED], None),
    }[how]
    result = _python(args, stdin, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "False"]
    assert "Traceback" not in result.stderr


def test_grading_inside_snakemake_run_and_script_blocks(tmp_path):
    (tmp_path / "check.py").write_text(
        "from easy2hard.grading import is_equivalent\n"
        "open(snakemake.output[0], 'w').write(str(is_equivalent('x^2+2x', 'x(x+2)')))\n"
    )
    (tmp_path / "Snakefile").write_text(
        "rule all:\n    input: 'run.txt', 'script.txt'\n\n"
        "rule run_block:\n    output: 'run.txt'\n    run:\n"
        "        from easy2hard.grading import is_equivalent\n"
        "        open(output[0], 'w').write(str(is_equivalent('\\\\sqrt{8}', '2\\\\sqrt{2}')))\n\n"
        "rule script_block:\n    output: 'script.txt'\n    script: 'check.py'\n"
    )
    result = _python(
        ["-m", "snakemake", "--cores", "1", "--snakefile", str(tmp_path / "Snakefile"), "--directory", str(tmp_path)],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run.txt").read_text() == "True" and (tmp_path / "script.txt").read_text() == "True"


# --- no silent wrong verdict --------------------------------------------------------------------


def test_a_killed_worker_is_retried_and_the_verdict_is_right(monkeypatch):
    real_check = grading_workers.Worker.check
    killed = []

    def dies_once(self, pred, gold, timeout):
        if not killed:
            real_check(self, "1", "1", timeout)  # started and answering: now kill it mid-use
            self.process.kill()
            killed.append(self.process.pid)
        return real_check(self, pred, gold, timeout)

    monkeypatch.setattr(grading_workers.Worker, "check", dies_once)
    stats = GradingStats()
    assert grade_many([(r"\sqrt{18}", r"3\sqrt{2}"), (r"\sqrt{18}", r"2\sqrt{3}")], workers=1, stats=stats) == [
        True,
        False,
    ]
    assert killed and stats.retries == 1 and stats.timeouts == 0


def test_a_worker_that_always_dies_is_an_error_not_false(monkeypatch):
    real_check = grading_workers.Worker.check

    def always_dies(self, pred, gold, timeout):
        self.process.kill()
        return real_check(self, pred, gold, timeout)

    monkeypatch.setattr(grading_workers.Worker, "check", always_dies)
    with pytest.raises(GradingError, match="failed twice"):
        is_equivalent(r"\sqrt{50}", r"5\sqrt{2}")


def test_a_worker_that_cannot_start_is_an_error_not_false(monkeypatch):
    monkeypatch.setattr(grading_workers.sys, "executable", "/bin/false")
    monkeypatch.setattr(grading_workers, "_pool", None)
    with pytest.raises(GradingError, match="did not start|exited"):
        grade_many([(r"\sqrt{32}", r"4\sqrt{2}")], workers=1)
    monkeypatch.undo()
    grading_workers._pool = None
    assert is_equivalent(r"\sqrt{32}", r"4\sqrt{2}")


@pytest.mark.timeout(60)
def test_a_timeout_is_false_and_counted():
    grading._verdict_cache.clear()
    stats = GradingStats()
    assert grade_many([("1000000!", "2"), (r"\sqrt{8}", r"2\sqrt{2}")], timeout=0.5, workers=1, stats=stats) == [
        False,
        True,
    ]
    assert stats.timeouts == 1 and stats.symbolic == 2


def test_each_distinct_pair_is_decided_once():
    grading._verdict_cache.clear()
    pairs = [(r"\sqrt{8}", r"2\sqrt{2}"), (r"\sqrt8", r"2\sqrt2"), ("5", "5.0"), ("4", "5")] * 8
    stats = GradingStats()
    assert grade_many(pairs, stats=stats) == [True, True, True, False] * 8
    assert (stats.pairs, stats.distinct, stats.symbolic, stats.in_process) == (32, 3, 1, 2)
    again = GradingStats()
    grade_many(pairs[:1], stats=again)
    assert again.cached == 1 and again.symbolic == 0


# --- the authors' grading mode ------------------------------------------------------------------

BOTH_MODES = [  # (pred, gold, lenient, prm800k)
    (r"\frac{2}{4}", r"\frac12", True, False),  # PRM800K: fractions must be reduced
    (r"\frac{20}{2}", "10", True, False),  # integers are exact
    ("0.25", r"\frac14", True, False),  # a decimal is not a fraction
    ("0.50", r"\frac12", True, False),
    ("0.5", r"\frac12", True, True),  # Hendrycks' normaliser maps exactly "0.5" to \frac{1}{2}
    (r"\sqrt{8}", r"2\sqrt{2}", True, False),  # no symbolic path
    ("x^2+2x", "x(x+2)", True, False),
    ("10.0", "10", True, True),
    ("1,000", "1000", True, True),
    (r"\dfrac{3}{4}", "3/4", True, True),
    (r"11,\! 111,\! 100", "11111100", True, True),
    ("x=5", "5", True, True),
    (r"5\text{ cm}", "5", True, True),
    ("(1, 2)", "(1,2)", True, True),
    ("2", "3", False, False),
    # A sentence after "# Answer", as real models write it: lenient reads the value, prm800k the whole text.
    ("The answer is 240.", "240", True, False),
    (r"So the final answer is $\boxed{7}$. I hope it is correct.", "7", True, False),
    ("Answer: 3/4", r"\frac34", True, False),
    ("The answer is 241.", "240", False, False),
]


@pytest.mark.parametrize("pred, gold, lenient, strict", BOTH_MODES)
def test_lenient_and_prm800k_modes(pred, gold, lenient, strict):
    assert is_equivalent(pred, gold) is lenient and is_equivalent(gold, pred) is lenient
    assert is_equivalent(pred, gold, mode="prm800k") is strict
    assert is_equivalent(gold, pred, mode="prm800k") is strict


def test_prm800k_mode_needs_no_worker_and_clusters_by_its_own_equivalence(monkeypatch):
    monkeypatch.setattr(grading_workers, "shared_pool", lambda workers=None: pytest.fail("the worker pool was used"))
    answers = [r"\frac12", r"\frac{2}{4}", "0.5", "1/2", r"\sqrt{8}", r"2\sqrt2", None]
    assert grade_many([(a, r"\frac12") for a in answers], mode="prm800k") == [
        True,
        False,
        True,
        True,
        False,
        False,
        False,
    ]
    assert cluster_answers(answers, mode="prm800k") == [0, 1, 0, 0, 2, 3, -1]
    with pytest.raises(ValueError, match="grading.mode"):
        is_equivalent("1", "1", mode="strict")


def test_cluster_many_matches_cluster_answers():
    groups = [[r"\frac12", "0.5", "3", None], [r"\sqrt{8}", r"2\sqrt2", "x", "x"], []]
    assert (
        grading.cluster_many(groups)
        == [cluster_answers(group) for group in groups]
        == [[0, 0, 1, -1], [0, 0, 1, 1], []]
    )


@pytest.mark.parametrize(
    "text, value",
    [
        ("The answer is 240.", "240."),
        ("Therefore, the answer is: $x = 2$", "$x = 2$"),
        ("answer = 3", "3"),
        ("The answer is", "The answer is"),  # no value: unchanged
        ("the answers are 1 and 2", "the answers are 1 and 2"),
        ("240", "240"),
    ],
)
def test_answer_from_phrase(text, value):
    assert grading.answer_from_phrase(text) == value


def test_an_answer_sentence_is_graded_by_the_stages(tmp_path):
    """extract_answer keeps the section as written (the authors'); the lenient grader reads its value."""
    from easy2hard.formats import extract_answer as extract

    completion = "We multiply 12 by 20.\n\n# Answer\n\nThe answer is 240."
    assert extract(completion) == "The answer is 240."
    assert grade_many([(extract(completion), "240")]) == [True]
    assert grade_many([(extract(completion), "240")], mode="prm800k") == [False]

"""``attention-course``: grade exercise notebooks and regenerate them from the solutions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .grading.generate import make_exercises
from .grading.grade import class_table, find_notebooks, format_report, grade_class, grade_notebooks, score


def _grade(args: argparse.Namespace) -> int:
    if args.class_dir is not None:
        by_learner = grade_class(Path(args.class_dir), jobs=args.jobs)
        fmt = "csv" if args.report and args.report.endswith(".csv") else "md"
        table = class_table(by_learner, fmt)
        print(table, end="")
        for learner, grades in by_learner.items():  # refused attempts, cells that failed: the instructor sees them
            for grade in grades:
                for note in grade.notes:
                    print(f"{learner}/{grade.path.name}: note: {note}")
        if args.report:
            Path(args.report).write_text(table, encoding="utf-8")
            print(f"wrote {args.report}")
        return (
            0
            if all(
                score(g)[0] == score(g)[1] and score(g)[1] and all(n.complete for n in g) for g in by_learner.values()
            )
            else 1
        )
    try:
        notebooks = find_notebooks(args.paths or ["exercises"])
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not notebooks:
        print("error: no notebooks to grade", file=sys.stderr)
        return 2
    grades = grade_notebooks(notebooks)
    print(format_report(grades))
    passed, total = score(grades)
    return 0 if total and passed == total and all(g.complete for g in grades) else 1


def _make_exercises(args: argparse.Namespace) -> int:
    for path in make_exercises(Path(args.solutions), Path(args.exercises)):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attention-course", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    grade = commands.add_parser("grade", help="grade exercise notebooks (default: exercises/)")
    grade.add_argument("paths", nargs="*", help="notebooks or folders of notebooks")
    grade.add_argument(
        "--class", dest="class_dir", metavar="CLASS_DIR", help="a folder with one sub-folder of notebooks per learner"
    )
    grade.add_argument("--report", metavar="FILE", help="with --class: write the table here (.md or .csv)")
    grade.add_argument("--jobs", type=int, default=2, help="with --class: learners graded in parallel")
    grade.set_defaults(run=_grade)

    make = commands.add_parser("make-exercises", help="regenerate exercises/ from solutions/")
    make.add_argument("--solutions", default="solutions")
    make.add_argument("--exercises", default="exercises")
    make.set_defaults(run=_make_exercises)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

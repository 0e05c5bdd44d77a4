"""``pyinvert models [NAME]``: the model zoo, or one model's layers."""

from pyinvert import models
from pyinvert.cli import common
from pyinvert.cli.common import say_lines


def add_parser(subparsers):
    m = subparsers.add_parser("models", help="list the model zoo, or describe a model's layers")
    m.add_argument("name", nargs="?", default=None, help="a model name")
    m.set_defaults(func=common.guard(run), parser=m)
    return m


def run(args) -> int:
    say_lines(models.models_command(args.name))
    return 0

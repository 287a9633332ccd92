"""Sweeps: a grid of experiments (spec.py) run into one results tree (runner.py), summed up in
one table and plots against each swept variable (summary.py), compared with compare.py."""

from .spec import Point, Spec, load, parse

__all__ = ["Point", "Spec", "load", "parse"]

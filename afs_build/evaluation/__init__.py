"""Evaluation: the benchmark suite asked of served specialists, graded by rules or by judge models."""

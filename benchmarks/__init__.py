"""dgseg's performance benchmark: ``python -m benchmarks.run`` writes BENCHMARKS.md.

``cases`` runs one measurement (a training case, an inference case or a FLOP count) and is what each
subprocess executes; ``report`` turns the collected results into the markdown report; ``run`` plans the
cases, runs them (one process each) and writes the report.
"""

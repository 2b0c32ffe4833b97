"""Speed, memory and quality benchmarks; each writes its results to benchmarks/results/."""

"""Reproducible benchmarks for dari, printed as tables and saved as JSON under bench/results/.

`python -m bench` runs the Kafka comparison against Tansu (see `bench.kafka_bench`).
"""

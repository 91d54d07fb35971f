"""Sinks of the job: Kafka topics (changes, late events, dead letters) and Redis memberships."""

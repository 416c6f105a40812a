"""The seed article's three claims, each put to the test by a sweep of
cnn_jax runs and one analysis (`python -m experiments.claims.main`)."""

"""Studies that use the cnn_jax library; each folder is one study."""

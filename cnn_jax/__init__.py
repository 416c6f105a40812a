"""cnn_jax: the seed ConvNet on Fashion-MNIST in JAX/Flax."""

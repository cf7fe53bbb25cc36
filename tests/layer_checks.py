"""One check for every Keras layer: build, call, config round trip, one training step."""

import numpy as np

from longbert_tf.framework import keras, tf


def check_layer(layer, inputs: dict, rtol=1e-5):
    """Calls `layer(**inputs)`, rebuilds it from its config, and trains it one step.

    Returns the first output. Asserts that the rebuilt layer (weights copied)
    gives the same output and that one SGD step on the output's squared mean
    changes every trainable weight and lowers that loss.
    """
    output = layer(**inputs)
    assert layer.built and layer.trainable_weights

    clone = type(layer).from_config(layer.get_config())
    clone(**inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(**inputs).numpy(), output.numpy(), rtol=rtol, atol=1e-6)

    def loss_value():
        return tf.reduce_mean(tf.square(layer(**inputs)))

    before = [w.numpy() for w in layer.trainable_weights]
    with tf.GradientTape() as tape:
        loss = loss_value()
    gradients = tape.gradient(loss, layer.trainable_weights)
    keras.optimizers.SGD(0.1).apply_gradients(zip(gradients, layer.trainable_weights))
    for old, new in zip(before, layer.trainable_weights):
        assert not np.array_equal(old, new.numpy()), f"{new.name} did not train"
    assert float(loss_value()) < float(loss)
    return output

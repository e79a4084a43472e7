"""The backend-specific part of a cached (GradCache) train step.

Why per backend: Keras has one train step per backend (TensorFlow records a
GradientTape, JAX differentiates a pure function of the model's state,
torch runs autograd), and a cached step needs what `keras.ops` does not
offer: the gradient of the loss with respect to a tensor, and a
vector-Jacobian product of the embedder with respect to the weights. So
this module holds, per backend, those two and a loop, and a `train_step`
that mirrors that backend's Keras step (loss tracker, loss scaling, metrics,
optimizer) around the backend-neutral passes of
`keras_mrl.models._gradient_cache`.

The loops run their mini-batches one after the other, so that one
mini-batch's activations are alive at a time: `jax.lax.fori_loop` and, on
TensorFlow, `tf.while_loop(parallel_iterations=1)` (the default lets graph
mode start up to 10 iterations at once) both become a single XLA While;
torch loops in Python, and also replays its global random state per
mini-batch (`_TorchRandomStates`).
"""

import keras

from keras_mrl.models._gradient_cache import MiniBatches
from keras_mrl.models._gradient_cache import backpropagate
from keras_mrl.models._gradient_cache import check_cacheable
from keras_mrl.models._gradient_cache import embed_all
from keras_mrl.models._gradient_cache import seed_variables


def train_step(model, branches, *args):
    """One cached step: `model.train_step` of the current backend."""
    check_cacheable(model)
    step = {
        "jax": _jax_train_step,
        "tensorflow": _tf_train_step,
        "torch": _torch_train_step,
    }[keras.backend.backend()]
    return step(model, branches, *args)


def _batch_rows(x):
    return keras.ops.shape(keras.tree.flatten(x)[0])[0]


# --- JAX: a pure function of the state ---------------------------------


def _jax_loop(lower, upper, body, init):
    import jax

    return jax.lax.fori_loop(lower, upper, body, init)


def _jax_vjp(fn, primals, cotangent):
    import jax

    output, pullback, aux = jax.vjp(fn, primals, has_aux=True)
    (gradients,) = pullback(cotangent.astype(output.dtype))
    return gradients, aux


def _jax_train_step(model, branches, state, data):
    import jax

    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    seeds = seed_variables(model)
    index = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    seed_values = [non_trainable[index[id(v)]] for v in seeds]

    def mapping(values):
        return list(zip(model.trainable_variables, values)) + list(
            zip(model.non_trainable_variables, non_trainable)
        )

    batches = MiniBatches(branches, model.mini_batch_size)
    embeddings, _ = embed_all(
        model, batches, seed_values, _jax_loop, mapping(trainable)
    )

    def loss_fn(embeddings):
        loss, _ = model.stateless_compute_loss(
            trainable,
            non_trainable,
            metrics_values,
            x=x,
            y=y,
            y_pred=embeddings,
            sample_weight=sample_weight,
            training=True,
        )
        optimizer_state = list(zip(model.optimizer.variables, optimizer_values))
        with keras.StatelessScope(state_mapping=optimizer_state):
            scaled = model.optimizer.scale_loss(loss)
        return scaled, loss

    (_, loss), grad = jax.value_and_grad(loss_fn, has_aux=True)(embeddings)
    gradients, seed_values = backpropagate(
        model,
        batches,
        grad,
        seed_values,
        _jax_loop,
        _jax_vjp,
        trainable,
        mapping,
    )
    trainable, optimizer_values = model.optimizer.stateless_apply(
        optimizer_values, gradients, trainable
    )
    logs, metrics_values = model._update_metrics_variables(
        metrics_values, loss, x, y, embeddings, sample_weight
    )
    non_trainable = list(non_trainable)
    for variable, value in zip(seeds, seed_values):
        non_trainable[index[id(variable)]] = value
    state = (trainable, non_trainable, optimizer_values, metrics_values)
    return logs, state


# --- TensorFlow: GradientTape ---------------------------------------------


def _tf_loop(lower, upper, body, init):
    import tensorflow as tf

    _, result = tf.while_loop(
        lambda k, _: k < upper,
        lambda k, carry: (k + 1, body(k, carry)),
        (tf.constant(lower), init),
        parallel_iterations=1,
    )
    return result


def _tf_vjp(fn, variables, cotangent):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        output, aux = fn(variables)
    gradients = tape.gradient(output, variables, output_gradients=cotangent)
    return _zeros_for_none(gradients, variables), aux


def _tf_train_step(model, branches, data):
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    seeds = seed_variables(model)
    seed_values = [tf.identity(v.value) for v in seeds]
    batches = MiniBatches(branches, model.mini_batch_size)
    embeddings, _ = embed_all(model, batches, seed_values, _tf_loop)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = model._compute_loss(
            x=x,
            y=y,
            y_pred=embeddings,
            sample_weight=sample_weight,
            training=True,
        )
        # Keras' step reports the loss of the global batch: a replica's
        # loss is scaled by 1 / replicas for the summed gradients.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        model._loss_tracker.update_state(
            loss * tf.cast(replicas, loss.dtype),
            sample_weight=tf.shape(keras.tree.flatten(x)[0])[0],
        )
        scaled = model.optimizer.scale_loss(loss)
    grad = tape.gradient(scaled, embeddings)
    variables = model.trainable_variables
    gradients, seed_values = backpropagate(
        model, batches, grad, seed_values, _tf_loop, _tf_vjp, variables
    )
    model.optimizer.apply_gradients(zip(gradients, variables))
    for variable, value in zip(seeds, seed_values):
        variable.assign(value)
    return model.compute_metrics(x, y, embeddings, sample_weight=sample_weight)


# --- torch: autograd ----------------------------------------------------------


class _TorchRandomStates:
    """Loops that record torch's global random state before each
    mini-batch of pass 1 and restore it before the same one in pass 3.

    Keras' torch dropout with an unseeded layer (KerasHub's, and
    `keras.layers.Dropout()` without `seed`) draws from torch's global
    generator, not from the layer's SeedGenerator.
    """

    def __init__(self):
        import torch

        self.devices = (
            [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        )
        self.states = [self._state()]

    def _state(self):
        import torch

        cuda = [torch.cuda.get_rng_state(d) for d in self.devices]
        return torch.get_rng_state(), cuda

    def record(self, lower, upper, body, init):
        carry = init
        for k in range(lower, upper):
            if k == len(self.states):
                self.states.append(self._state())
            carry = body(k, carry)
        return carry

    def replay(self, lower, upper, body, init):
        import torch

        carry = init
        for k in range(lower, upper):
            # fork_rng puts the state of pass 1's end back afterwards.
            with torch.random.fork_rng(devices=self.devices):
                state, cuda = self.states[k]
                torch.set_rng_state(state)
                for device, value in zip(self.devices, cuda):
                    torch.cuda.set_rng_state(value, device)
                carry = body(k, carry)
        return carry


def _torch_vjp(fn, variables, cotangent):
    import torch

    output, aux = fn(variables)
    gradients = torch.autograd.grad(
        output,
        [v.value for v in variables],
        grad_outputs=cotangent,
        allow_unused=True,
    )
    return _zeros_for_none(gradients, variables), aux


def _torch_train_step(model, branches, data):
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    seeds = seed_variables(model)
    seed_values = [v.value.clone() for v in seeds]
    batches = MiniBatches(branches, model.mini_batch_size)
    random_states = _TorchRandomStates()
    with torch.no_grad():
        embeddings, _ = embed_all(
            model, batches, seed_values, random_states.record
        )
    embeddings = embeddings.detach().requires_grad_()
    loss = model._compute_loss(
        x=x,
        y=y,
        y_pred=embeddings,
        sample_weight=sample_weight,
        training=True,
    )
    model._loss_tracker.update_state(loss, sample_weight=_batch_rows(x))
    scaled = model.optimizer.scale_loss(loss)
    (grad,) = torch.autograd.grad(scaled, embeddings)
    variables = model.trainable_variables
    gradients, seed_values = backpropagate(
        model,
        batches,
        grad,
        seed_values,
        random_states.replay,
        _torch_vjp,
        variables,
    )
    with torch.no_grad():
        model.optimizer.apply(gradients, variables)
        for variable, value in zip(seeds, seed_values):
            variable.assign(value)
    embeddings = embeddings.detach()
    return model.compute_metrics(x, y, embeddings, sample_weight=sample_weight)


def _zeros_for_none(gradients, variables):
    """A weight the embeddings do not depend on gets a zero gradient."""
    return [
        keras.ops.zeros(v.shape, v.dtype) if g is None else g
        for g, v in zip(gradients, variables)
    ]

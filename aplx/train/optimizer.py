"""The optimiser and its learning-rate schedule, as the authors' PyTorch code runs them."""

import jax
import jax.numpy as jnp
import ml_collections
import optax

# Name -> (optim, epochs) -> learning rate per epoch (`make_schedule`).
SCHEDULES = {
  "cosine": lambda optim, epochs: optax.cosine_decay_schedule(
    optim.lr, decay_steps=epochs, alpha=optim.eta_min / optim.lr if optim.lr else 0.0
  ),
  "exponential": lambda optim, epochs: optax.exponential_decay(
    optim.lr, transition_steps=1, decay_rate=optim.decay_rate
  ),
  "constant": lambda optim, epochs: optax.constant_schedule(optim.lr),
}


def make_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int, epochs: int) -> optax.Schedule:
  """The learning rate as a function of the step, constant within an epoch like PyTorch's schedulers.

  - "cosine": `CosineAnnealingLR(T_max=epochs, eta_min)` stepped once per epoch:
    lr(e) = eta_min + (lr - eta_min) (1 + cos(pi e / epochs)) / 2.
  - "exponential": `ExponentialLR(gamma=decay_rate)` stepped per epoch: lr(e) = lr * decay_rate^e.
  - "constant".
  """
  if optim.schedule not in SCHEDULES:
    raise ValueError(f"config.optim.schedule={optim.schedule!r}: use one of {sorted(SCHEDULES)}.")
  per_epoch = SCHEDULES[optim.schedule](optim, epochs)
  return lambda step: per_epoch(step // steps_per_epoch)


def make_optimizer(
  optim: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """SGD as the authors ran it in PyTorch, from optax parts.

  Order of PyTorch's `clip_grad_norm_(5.0)` then `SGD(momentum, nesterov, weight_decay)`: clip the raw
  gradient by its global norm, add `weight_decay * param` to it (coupled L2, applied to every parameter
  like PyTorch), then heavy-ball or Nesterov momentum with dampening 0, then the learning rate.

  `optim` has the fields lr, momentum, nesterov, weight_decay, grad_clip and l1 (`with_defaults` fills
  in l1). `optim.l1` (ANL's delta, 0: off): the gradient of `l1 * sum |theta|` over every parameter,
  sign(theta) with sign(0) = 0 as torch's abs().backward(), added before clipping, as the ANL code adds the
  penalty to the loss before `backward()`.
  """
  parts = []
  l1 = optim.l1
  if l1:
    parts.append(
      optax.stateless(
        lambda updates, params: jax.tree.map(lambda g, p: g + l1 * jnp.sign(p), updates, params)
      )
    )
  if optim.grad_clip:
    parts.append(optax.clip_by_global_norm(optim.grad_clip))
  if optim.weight_decay:
    parts.append(optax.add_decayed_weights(optim.weight_decay))
  parts.append(optax.sgd(schedule, momentum=optim.momentum or None, nesterov=optim.nesterov))
  return optax.chain(*parts)

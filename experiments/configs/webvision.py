r"""WebVision "Mini" (first 50 classes, Google subset), Table 5 of Ma et al. 2020: ImageNet-style
ResNet-50 at 224x224, 250 epochs, batch 512, lr 0.4 decayed by 0.97 per epoch.

  python -m experiments.main --workdir runs/webvision_nce+rce \
      --config experiments/configs/webvision.py:loss=nce+rce,noise=none

The labels are the web's own (real noise), so noise=none. Paper top-1 on the ILSVRC12 validation set
(50 classes): CE 58.88, GCE 53.68, SCE 61.76, NCE+MAE 62.36, NCE+RCE 62.64.

WebVision is not in the TFDS catalogue: `aplx.data` must be given a TFDS builder for it (a dataset
named 'webvision' in the data dir) before this config can run. Everything else (model, optimiser,
schedule, losses) is ready and tested.
"""

from experiments.configs import common

# The authors' configs/webvision_mini/*.yaml (authors_hparams.csv).
LOSSES = {
  "ce": {},
  "gce": {"q": 0.7},
  "sce": {"alpha": 10.0, "beta": 1.0},
  "nce+mae": {"alpha": 50.0, "beta": 1.0},
  "nce+rce": {"alpha": 50.0, "beta": 0.1},
  "nfl+mae": {"alpha": 50.0, "beta": 1.0, "gamma": 0.5},
  "nfl+rce": {"alpha": 50.0, "beta": 0.1, "gamma": 0.5},
}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, noise="none")
  params = common.loss_params(LOSSES, args["loss"])
  params.update(common.fidelity_loss_params(args["loss"], args["fidelity"]))
  config = common.base_config(
    args,
    dataset="webvision",
    model="resnet50_imagenet",
    epochs=250,
    batch_size=512,
    loss_params=params,
    optim={
      "lr": 0.4,
      "momentum": 0.9,
      "nesterov": True,
      "weight_decay": 3e-5,
      "grad_clip": 5.0,
      "schedule": "exponential",
      "eta_min": 0.0,
      "decay_rate": 0.97,
    },
  )
  if args["loss"] in common.ANL_LOSSES:
    common.apply_anl(config, "webvision")
  return config

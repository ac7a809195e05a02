r"""WebVision "Mini" (first 50 classes, Google subset), Table 5 of Ma et al. 2020: ImageNet-style
ResNet-50 at 224x224, 250 epochs, batch 512, lr 0.4 decayed by 0.97 per epoch (the authors'
configs/webvision_mini/*.yaml, which agree with the paper).

  python -m aplx.data.prepare webvision --raw_dir /data/webvision --imagenet_val_dir /data/ilsvrc12/val
  python -m experiments.main --workdir runs/webvision_nce+rce \
      --config experiments/configs/webvision.py:loss=nce+rce

The labels are the web's own (real noise), so noise=none; there are no clean training labels. Each
epoch reports test_acc on the WebVision validation set and, when prepared with --imagenet_val_dir,
test_acc_imagenet_val on the ILSVRC2012 validation images of the same 50 classes: the paper's Table 5
(CE 58.88, GCE 53.68, SCE 61.76, NCE+MAE 62.36, NCE+RCE 62.64; 1 run each).

Images are streamed from the prepared files and decoded and augmented per example as the authors do
(RandomResizedCrop 224, flip, ColorJitter(0.4, 0.4, 0.4, 0.2); eval resize 256 + centre crop 224) in
`data_workers` grain processes (the authors ran 8 loader workers for their 4 GPUs; docs/data.md says how
many a GPU needs). On accelerators, `--config.model.kwargs.dtype=bfloat16` computes in bfloat16
(parameters, loss and optimiser stay float32). A quick try on a CPU: `--config.image_size=64
--config.batch_size=8 --config.max_steps=2 --config.data_workers=0`. `webvision_full` (all 1,000 classes):
`--config.dataset=webvision_full` after `prepare webvision_full`.
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

# The authors' optimiser (configs/webvision_mini/*.yaml): SGD nesterov 0.9, lr 0.4 x 0.97 per epoch,
# weight decay 3e-5, gradient norm clipped at 5 (their grad_bound).
OPTIM = {
  "lr": 0.4,
  "momentum": 0.9,
  "nesterov": True,
  "weight_decay": 3e-5,
  "grad_clip": 5.0,
  "schedule": "exponential",
  "eta_min": 0.0,
  "decay_rate": 0.97,
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
    optim=OPTIM,
  )
  config.eval_batch_size = 1024  # The authors'.
  config.data_workers = 8  # The authors' num_of_workers (for 4 GPUs).
  if args["loss"] in common.ANL_LOSSES:
    common.apply_anl(config, "webvision")
  return config

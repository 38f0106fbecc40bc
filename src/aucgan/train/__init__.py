"""Training: LightningModules for the AU net, coarse stage and detail GAN; their data and callbacks."""

"""Fine-tuning the generators on a user's own footage (``vidsr finetune``): Real-ESRGAN's
training recipe - synthetic degradations, L1 + perceptual + GAN losses against
UNetDiscriminatorSN, an EMA of the generator - resumable and exported as a named model."""

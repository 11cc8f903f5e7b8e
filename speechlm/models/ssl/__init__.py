"""Self-supervised pretraining: span masks, quantizers and the contrastive loss of wav2vec 2.0, HuBERT and BEST-RQ."""

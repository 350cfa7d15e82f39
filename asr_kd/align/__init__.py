"""GMM-HMM training (mono, tri), forced alignment, alignment stores, Kaldi alignment import."""

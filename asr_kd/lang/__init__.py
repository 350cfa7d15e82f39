"""Lang stage: Kaldi dict dir -> lang dir (phones, words, topology, L), n-gram LM -> G."""

"""Decoders: the attention (Transformer) decoder, transducer prediction networks and joiner.

Every autoregressive part (attention decoders, transducer predictors, and the multitask and
language-model decoders to come) follows one incremental-decoding protocol, which every
search uses:

    state = part.init_state(n, device, memory=None, memory_mask=None)  # n rows; memory: the
                                                                        # encoder output, for
                                                                        # parts that attend to it
    out, state = part.step(tokens, state)      # tokens (n,) -> out (n, V) log-probs, or (n, P)
                                               # a predictor's output for the joiner
    state = part.select_state(state, index)    # rows (n',) kept / reordered by a beam search
"""
